package control

import (
	"log/slog"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/pidfile"
)

// A Wait waits until a data directory is free (a stale record counts as
// free) or its holder reports status ready: dirlockd wait. Set its fields,
// then call Run.
type Wait struct {
	Options interlock.Options
	Log     *slog.Logger  // its lines carry the directory as datadir
	Ready   bool          // wait for ready, not for free
	Timeout time.Duration // 0: wait forever
	// Began is when the wait began, which Timeout counts from (a caller
	// that started an etcd agent first counts that time too); zero: when
	// Run is called.
	Began time.Time

	// Lease, if not nil, waits for the lease key of the directory to be
	// held (held) or free too, until until (zero: no end), once the
	// directory itself is: nil once it is; an error, after a pause, for
	// Run to look at the directory again.
	Lease func(held bool, until time.Time) error
}

// Run waits for dir: Done once reached, Failed at the timeout, Unreadable
// if dir cannot be inspected.
func (w *Wait) Run(dir string) Outcome {
	log := w.Log.With("datadir", dir)
	target := "free"
	if w.Ready {
		target = "ready"
	}
	start := w.Began
	if start.IsZero() {
		start = time.Now()
	}
	for {
		rep, err := interlock.Inspect(dir, w.Options)
		if err != nil {
			log.Error("cannot inspect the data directory", "err", err)
			return Unreadable
		}
		reached := rep.State == interlock.Free || rep.State == interlock.Stale
		if w.Ready {
			reached = rep.State == interlock.Held && rep.Record != nil && rep.Record.Status == pidfile.Ready
		}
		if reached && w.Lease != nil {
			var until time.Time
			if w.Timeout > 0 {
				until = start.Add(w.Timeout)
			}
			if err := w.Lease(w.Ready, until); err != nil {
				log.Debug("the lease is not there yet", "err", err)
				reached = false
			}
		}
		if reached {
			log.Debug("reached", "for", target, "after", time.Since(start))
			return Done
		}
		if w.Timeout > 0 && time.Since(start) >= w.Timeout {
			log.Error("timed out", "for", target, "state", rep.State, "timeout", w.Timeout)
			return Failed
		}
		time.Sleep(100 * time.Millisecond)
	}
}
