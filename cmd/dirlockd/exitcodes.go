package main

import (
	"errors"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// startExit is the one table from what keeps a server from starting (the
// interlock's and the lease's errors) to the exit status run reports, and
// stress too: conflict for a directory or lease key held by another (75,
// or --conflict-exit-code; stress, which waits instead, passes 0), 76 for
// survivors of an earlier holder, 69 for etcd out of reach, 78 for the data
// directory's or etcd's configuration rather than dirlockd's failure, 70
// for anything else. The log lines that say what to do are the callers'.
func startExit(err error, conflict int) int {
	switch {
	case conflict != 0 && (errors.As(err, new(*interlock.BrokenLocksError)) || errors.As(err, new(*interlock.HeldError)) ||
		errors.As(err, new(*lease.HeldError))):
		return conflict
	case errors.As(err, new(*interlock.OrphansError)) || errors.Is(err, interlock.ErrOrphans):
		return exitcode.Orphans
	case errors.As(err, new(*lease.UnavailableError)):
		return exitcode.Unavailable
	case invalidStorage(err) || errors.As(err, new(*lease.RefusedError)) || errors.As(err, new(*lease.NotFoundError)) ||
		errors.As(err, new(*lease.TokenBackError)):
		return exitcode.Invalid
	}
	return exitcode.Internal
}
