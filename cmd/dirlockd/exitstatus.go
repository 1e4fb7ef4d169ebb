package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// execFailed maps a failure to start COMMAND to run's status as a shell
// does: 127 when it is not there, 126 when it is there but cannot be
// executed. A fork that fails for want of resources (EAGAIN, ENOMEM,
// EMFILE) is dirlockd's own failure, 70.
func (r *runner) execFailed(err error) int {
	code := exitcode.NoExec
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		code = exitcode.NotFound
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		code = exitcode.Internal
	}
	r.log.Error("cannot execute the command", "command", r.argv[0], "err", err)
	return code
}

func (r *runner) acquireFailed(err error) int {
	var he *interlock.HeldError
	var oe *interlock.OrphansError
	var be *interlock.BrokenLocksError
	switch {
	case errors.As(err, &be):
		r.log.Error("cannot start: "+err.Error(), "datadir", be.Dir, "holder_host", be.Record.Hostname, "holder_pid", be.Record.PID,
			"hint", "do not start anything in this directory from this host until every host's mount keeps locks (see docs/nfs.md)")
		return r.flags.conflictExit
	case errors.As(err, &he):
		r.log.Error("cannot start: "+err.Error(), "datadir", he.Dir, "holder_pid", he.PID, "host", he.Host,
			"since", he.Started.Format(time.RFC3339), "holders", he.Holders,
			"hint", "stop it first: dirlockd stop -D "+he.Dir+", or wait: --wait DURATION")
		return r.flags.conflictExit
	case errors.As(err, &oe):
		var b strings.Builder
		for i, o := range oe.Orphans {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%d (%s)", o.PID, o.Cmdline)
		}
		r.log.Error("cannot start: "+err.Error(), "datadir", oe.Dir, "orphans", b.String(),
			"hint", "stop the surviving processes of the old server, then start again")
		return exitcode.Orphans
	case invalidStorage(err):
		attrs := []any{"datadir", r.dir}
		if r.flags.user != "" {
			// The start rule applies to the user dirlockd became.
			attrs = append(attrs, "hint", "with --user "+r.flags.user+", the data directory must belong to that user (the server's), as the server itself needs")
		}
		r.log.Error("cannot start: "+err.Error(), attrs...)
		return exitcode.Invalid
	}
	r.log.Error("cannot start: "+err.Error(), "datadir", r.dir)
	return exitcode.Internal
}

// logExit logs how a process of the tree ended.
func (r *runner) logExit(what string, pid int, ws unix.WaitStatus) {
	if ws.Signaled() {
		r.log.Info(what+" was killed by a signal", "pid", pid, "signal", unix.SignalName(ws.Signal()))
		return
	}
	r.log.Info(what+" exited", "pid", pid, "status", ws.ExitStatus())
}

// exitCode is the status run reports for a process that ended so: its exit
// status, or 128+N if signal N killed it.
func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return exitcode.SignalBase + int(ws.Signal())
	}
	return exitcode.Internal
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return unix.SignalName(ws.Signal())
	}
	return strconv.Itoa(ws.ExitStatus())
}

// exitCode is run's status once the tree is gone: the last main process's,
// if its status is known, else the command's.
func (r *runner) exitCode() int {
	if r.mainCode != nil {
		return *r.mainCode
	}
	return r.cmdCode
}
