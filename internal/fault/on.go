//go:build faultinject

package fault

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// At kills the process at the step $DIRLOCKD_FAULT names.
func At(s Step) {
	if os.Getenv(Env) == strconv.Itoa(int(s)) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

// Fail fails the named point when $DIRLOCKD_FAULT names it.
func Fail(point string) error {
	if os.Getenv(Env) == point {
		return fmt.Errorf("fault injected at %s", point)
	}
	return nil
}
