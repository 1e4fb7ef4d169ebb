package interlock

import (
	"time"

	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/shm"
)

// WithHook returns o with a fault-injection hook called at every Step.
func WithHook(o Options, h func(fault.Step)) Options { o.hook = h; return o }

// WithNoSync returns o without fsync of the pidfile, for benchmarks: a crash
// can then leave an empty record.
func WithNoSync(o Options) Options { o.noSync = true; return o }

// WithSettle returns o with a shorter settle time, for tests of orphans.
func WithSettle(o Options, d time.Duration) Options { o.settle = d; return o }

// Segment returns the holder's attached SysV segment.
func (l *Lock) Segment() *shm.Segment { return l.seg }

// WithKeepHook returns o with a hook that a Keeper calls before each of its
// storage operations ("recheck", "update"); the hook may block, as a stalled
// storage does.
func WithKeepHook(o KeepOptions, h func(op string)) KeepOptions { o.hook = h; return o }
