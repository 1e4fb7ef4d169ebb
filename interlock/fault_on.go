//go:build faultinject

package interlock

import (
	"os"
	"strconv"
	"syscall"
)

// FaultEnv names the step at which a faultinject build kills itself with
// SIGKILL: the number of a Step. Release builds have no such hook.
const FaultEnv = "DIRLOCKD_FAULT"

// faultPoint kills the process at the step $DIRLOCKD_FAULT names.
func faultPoint(s Step) {
	if os.Getenv(FaultEnv) == strconv.Itoa(int(s)) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
