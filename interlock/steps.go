package interlock

// Step names a point in Acquire and Release, for fault injection in tests.
type Step int

// The steps, in order.
const (
	StepOpened          Step = iota + 1 // data directory checked, pidfile open
	StepLocked                          // file lock taken
	StepReadPrevious                    // old record read
	StepWitnessed                       // old segments analysed, stale ones removed
	StepSegmentCreated                  // new segment created, attached, header written
	StepRecordWritten                   // new record written and synced
	StepReleaseMarked                   // Release: record says stopped
	StepReleaseDetached                 // Release: segment detached
	StepReleaseRemoved                  // Release: segment removed
	StepReleaseUnlocked                 // Release: lock released
)

// FaultEnv names the variable through which a build made with -tags
// faultinject is told the Step at which to kill itself with SIGKILL (its
// number). Release builds ignore it: they carry no fault hook at all.
const FaultEnv = "DIRLOCKD_FAULT"

func (o Options) step(s Step) {
	faultPoint(s)
	if o.hook != nil {
		o.hook(s)
	}
}
