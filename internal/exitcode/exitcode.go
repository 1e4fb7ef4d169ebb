// Package exitcode names the exit codes of dirlockd's commands, which
// scripts and init systems branch on, in one place: the command returns
// them and the tests expect them by these names. run's own codes come from
// sysexits(3) where one fits, and from the shell for a command that cannot
// be executed; check, status, stop and wait have small codes of their own
// (status the LSB ones). docs/cli.md tells the same table.
package exitcode

// run, and every command for usage and internal errors.
const (
	Unavailable = 69  // EX_UNAVAILABLE: etcd cannot be reached (--etcd); the server never started
	Held        = 75  // EX_TEMPFAIL: held by a live instance
	Orphans     = 76  // orphaned processes of a dead holder survive
	Invalid     = 78  // EX_CONFIG: invalid data directory, pidfile or configuration
	Usage       = 64  // EX_USAGE
	Internal    = 70  // EX_SOFTWARE
	NoExec      = 126 // command found but not executable
	NotFound    = 127 // command not found
	SignalBase  = 128 // the server was killed by signal N: 128+N
)

// check: whether a start is safe now.
const (
	CheckFree    = 0 // free, or stale: nobody is left
	CheckHeld    = 1 // held by a live instance
	CheckOrphans = 2 // orphaned processes of a dead holder survive
	CheckInvalid = 3 // invalid data directory or pidfile
)

// status: the LSB codes of an init script's status action.
// LSB has no code for a server being stopped or one that runs on without
// its dirlockd; they take codes from the range LSB leaves to applications
// (150-199).
const (
	StatusRunning      = 0
	StatusDead         = 1 // a stale record, or survivors of a dead holder without its main process
	StatusNotRunning   = 3
	StatusUnknown      = 4
	StatusStopping     = 150 // held, and the holder is stopping the server
	StatusUnsupervised = 151 // dirlockd run is dead, its server's main process alive
)
