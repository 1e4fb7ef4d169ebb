package supervise

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// SignalName is a signal's name, SIGTERM, or its number if it has none.
func SignalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}

// ParseSignal parses a signal as kill(1) takes it: a name, with or without
// SIG, in any case (TERM, sigint), or a number from 1 to 64. It reads what
// SignalName writes.
func ParseSignal(s string) (syscall.Signal, error) {
	if v, err := strconv.Atoi(s); err == nil {
		if v <= 0 || v > 64 {
			return 0, fmt.Errorf("signal number %d out of range", v)
		}
		return syscall.Signal(v), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
