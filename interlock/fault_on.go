//go:build faultinject

package interlock

import (
	"os"
	"strconv"
	"syscall"
)

// faultPoint kills the process at the step $DIRLOCKD_FAULT names.
func faultPoint(s Step) {
	if os.Getenv(FaultEnv) == strconv.Itoa(int(s)) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
