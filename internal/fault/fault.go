// Package fault lets the crash tests stop dirlockd at named points: a build
// made with -tags faultinject kills itself with SIGKILL at the Step that
// $DIRLOCKD_FAULT names, or fails the named point of run (Fail), so that
// tests reach paths the kernel does not let them provoke at will. Release
// builds carry no fault hook at all (off.go).
package fault

// Env names the variable that tells a faultinject build where to fail: a
// Step's number, or a point's name (Fail).
const Env = "DIRLOCKD_FAULT"

// Step names a point in interlock's Acquire and Release.
type Step int

// The steps, in order.
const (
	Opened          Step = iota + 1 // data directory checked, pidfile open
	Locked                          // file lock taken
	ReadPrevious                    // old record read
	Witnessed                       // old segments analysed, stale ones removed
	SegmentCreated                  // new segment created, attached, header written
	RecordWritten                   // new record written and synced
	ReleaseMarked                   // Release: record says stopped
	ReleaseDetached                 // Release: segment detached
	ReleaseRemoved                  // Release: segment removed
	ReleaseUnlocked                 // Release: lock released
)
