package main

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// TestStartExit: the one table of start failures, through wrapping.
func TestStartExit(t *testing.T) {
	for _, c := range []struct {
		err            error
		conflict, want int
	}{
		{&interlock.HeldError{}, 75, 75},
		{&interlock.HeldError{}, 9, 9},
		{&interlock.BrokenLocksError{}, 75, 75},
		{&lease.HeldError{}, 75, 75},
		{&interlock.HeldError{}, 0, exitcode.Internal}, // stress waits instead
		{&interlock.OrphansError{}, 75, exitcode.Orphans},
		{&lease.UnavailableError{}, 75, exitcode.Unavailable},
		{&lease.RefusedError{}, 75, exitcode.Invalid},
		{&lease.NotFoundError{}, 75, exitcode.Invalid},
		{&lease.TokenBackError{}, 0, exitcode.Invalid},
		{interlock.ErrInvalid, 75, exitcode.Invalid},
		{unix.ENOSPC, 75, exitcode.Invalid},
		{unix.EIO, 75, exitcode.Internal},
		{errors.New("something else"), 75, exitcode.Internal},
	} {
		err := fmt.Errorf("start: %w", c.err)
		if got := startExit(err, c.conflict); got != c.want {
			t.Errorf("startExit(%T, %d) = %d, want %d", c.err, c.conflict, got, c.want)
		}
	}
}
