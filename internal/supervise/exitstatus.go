package supervise

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// ExecFailed logs and maps a failure to start COMMAND to run's status as a shell
// does: 127 when it is not there, 126 when it is there but cannot be
// executed. A fork that fails for want of resources (EAGAIN, ENOMEM,
// EMFILE) is dirlockd's own failure, 70.
func ExecFailed(log *slog.Logger, command string, err error) int {
	code := exitcode.NoExec
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		code = exitcode.NotFound
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		code = exitcode.Internal
	}
	log.Error("cannot execute the command", "command", command, "err", err)
	return code
}

// logExit logs how a process of the tree ended.
func (s *Supervisor) logExit(what string, pid int, ws unix.WaitStatus) {
	if ws.Signaled() {
		s.Log.Info(what+" was killed by a signal", "pid", pid, "signal", unix.SignalName(ws.Signal()))
		return
	}
	s.Log.Info(what+" exited", "pid", pid, "status", ws.ExitStatus())
}

// ExitCode is the status run reports for a process that ended so: its exit
// status, or 128+N if signal N killed it.
func ExitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return exitcode.SignalBase + int(ws.Signal())
	}
	return exitcode.Internal
}

// exitCode is run's status once the tree is gone: the last main process's,
// if its status is known, else the command's.
func (s *Supervisor) exitCode() int {
	if s.mainCode != nil {
		return *s.mainCode
	}
	return s.cmdCode
}

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
