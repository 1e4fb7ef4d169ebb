package interlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
)

// lockWaiting takes f's lock, retrying while it is busy for as long as opts
// and ctx allow (counted from start), and at least until a busy lock can be
// blamed on somebody.
//
// Where the kernel can queue a waiter (flock and OFD locks on a local
// filesystem) a waiter blocks in it (pidfile.File.LockWait), so that the
// release hands the lock straight to a waiter instead of to the releaser's
// next attempt. Elsewhere (POSIX locks, shared storage) it sleeps until the
// pidfile is closed by somebody (pidfile.ReleaseWatch: the moment a
// holder's lock goes) and tries again then, or after a fallback interval,
// for the releases a watch cannot see (an explicit unlock; a holder on
// another host of a shared filesystem, where it polls as before). A grant
// on a pidfile that was replaced meanwhile fails with pidfile.ErrReplaced:
// the caller opens the pidfile again.
//
// Saying who holds a busy lock can cost a scan of every process's
// descriptors, so a caller that waits asks only when it is about to give up:
// dozens of waiters classifying on every retry would starve the very holder
// they wait for.
func lockWaiting(ctx context.Context, f *pidfile.File, opts Options, me self, start time.Time) error {
	dev, ino := f.ID()
	fallback := 100 * time.Millisecond
	if fs, err := f.Filesystem(); err != nil || fs.Shared() {
		fallback = 0 // jittered backoff below
	}
	kernelWait := true
	retry := backoff{d: time.Millisecond, max: 10 * time.Millisecond}
	var watch *pidfile.ReleaseWatch
	defer func() {
		if watch != nil {
			watch.Close()
		}
	}()
	for {
		err := f.TryLock(opts.LockMethod)
		if err == nil || !errors.Is(err, pidfile.ErrLocked) {
			return err
		}
		if errors.As(err, new(*pidfile.LockedHereError)) {
			return heldHere(err, me)
		}
		waited := time.Since(start)
		if opts.Wait >= 0 && waited >= opts.Wait || ctx.Err() != nil {
			rec, _, _ := f.ReadRecord()
			verdict, final := judgeBusy(f.Dir(), rec, func(pid int) bool { return proc.HoldsLock(pid, dev, ino) }, f.Holders, me)
			if ctx.Err() != nil {
				return fmt.Errorf("%w (gave up waiting: %w)", verdict, ctx.Err())
			}
			if final || waited >= opts.settleTime() {
				return verdict
			}
		}
		// Block in the kernel only while the caller's wait lasts. A
		// verdict that was not final yet (the settle time) is asked
		// again after every retry, as the holder's record may name it
		// any moment.
		if waiting := opts.Wait < 0 || waited < opts.Wait; kernelWait && waiting {
			wctx, cancel := ctx, context.CancelFunc(func() {})
			if opts.Wait > 0 {
				wctx, cancel = context.WithTimeout(ctx, opts.Wait-waited)
			}
			err := f.LockWait(wctx, opts.LockMethod)
			cancel()
			switch {
			case err == nil, errors.Is(err, pidfile.ErrReplaced):
				return err
			case errors.Is(err, pidfile.ErrNoKernelWait), errors.Is(err, pidfile.ErrLocked):
				// Not for this lock, or the lock of the other family
				// is what is busy: the kernel cannot queue us on it.
				kernelWait = false
			case wctx.Err() == nil:
				return err
			}
			continue // try once more, then judge
		}
		if watch == nil && fallback > 0 {
			// Watch first, then try again at once: a release between
			// the failed attempt and the watch is not missed.
			if watch, err = f.WatchRelease(); err == nil {
				continue
			}
			watch, fallback = nil, 0
		}
		d := fallback
		if d == 0 {
			// Jittered, and short at most: without a watch a waiter
			// only notices a release when it tries again.
			d = retry.next()
		}
		if opts.Wait > 0 && waited < opts.Wait {
			d = min(d, opts.Wait-waited) // judge when the wait runs out
		}
		if watch != nil {
			watch.Wait(ctx, d)
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}
