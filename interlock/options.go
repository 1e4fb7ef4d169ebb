package interlock

import (
	"time"

	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/pidfile"
)

// DefaultSettle is how long a busy lock is watched before the busy-ness is
// blamed on orphans: a starter holds the lock for a few milliseconds before
// its record names it, and an inspector may be probing the lock.
const DefaultSettle = 2 * time.Second

// Options tune Acquire and Inspect. The zero value is ready to use.
type Options struct {
	// Pidfile is the pidfile's name inside the data directory
	// (pidfile.DefaultName if empty).
	Pidfile string
	// LockMethod forces a lock method; Auto falls back from flock to OFD
	// to POSIX locks as the filesystem demands.
	LockMethod pidfile.Method
	// Wait is how long Acquire waits for a held directory: 0 fails at
	// once, a negative value waits until ctx is done.
	Wait time.Duration
	// Recheck is how often a long-running holder calls (*Lock).Check and
	// (*Lock).Heartbeat: (*Lock).Keep does it for it. Heartbeat records
	// it in the record as the holder's heartbeat interval, and Acquire
	// derives its takeover watch from it when TakeoverAfter is zero.
	Recheck time.Duration
	// TakeoverAfter is how long Acquire watches the heartbeat of a holder
	// on another host before taking over from it when the lock is free (a
	// heartbeat that moves means the storage's locks are broken). Zero
	// means three times the longer of Recheck and the holder's own
	// heartbeat interval, or DefaultTakeoverAfter. It is never shorter than
	// twice the holder's interval.
	TakeoverAfter time.Duration
	// TakeoverProof, if set, is asked before that watch: an answer other
	// than "" says why the record's holder provably holds nothing any
	// more (dirlockd run --etcd: the lease the record names has ended,
	// and its holder dies before its lease can end), and the watch is
	// skipped. Takeover.Proof carries the answer.
	TakeoverProof func(rec *pidfile.Record) string
	// AllowLocalLocks lets Acquire use a shared filesystem whose mount
	// options keep locks on this host (NFS nolock or local_lock=, CIFS
	// nobrl). Set it only when no other host mounts the filesystem.
	AllowLocalLocks bool
	// ListHolders makes Inspect name every process that holds the lock
	// of a held directory (the wrapper and the server sharing its
	// descriptor), which costs a look at every process's descriptors.
	// Without it a recorded holder that proves itself is named alone.
	ListHolders bool

	settle time.Duration    // DefaultSettle if zero
	hook   func(fault.Step) // test fault injection
	noSync bool             // benchmarks: no fsync of the pidfile
}

func (o Options) pidfileOptions() pidfile.Options {
	return pidfile.Options{Name: o.Pidfile, Method: o.LockMethod, NoSync: o.noSync}
}

func (o Options) settleTime() time.Duration {
	if o.settle > 0 {
		return o.settle
	}
	return DefaultSettle
}

// step marks a point of Acquire or Release, for fault injection: a
// faultinject build may die there, and a test's hook learns of it.
func (o Options) step(s fault.Step) {
	fault.At(s)
	if o.hook != nil {
		o.hook(s)
	}
}
