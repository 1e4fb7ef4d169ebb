package interlock

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirlockd/dirlockd/pidfile"
)

// StallFloor is the least time a storage operation may take before a Keeper
// counts the storage as stalled when KeepOptions.StallAfter is zero: a slow
// fsync on a busy disk is not a loss.
const StallFloor = 5 * time.Second

// KeepOptions tune (*Lock).Keep. The zero value is ready to use.
type KeepOptions struct {
	// StallAfter is how long one storage operation (a recheck, a
	// heartbeat, a record update) may run before the storage counts as
	// gone and Lost reports a *StallError. Zero means twice the lock's
	// Options.Recheck, and never less than StallFloor: the heartbeat is
	// then three intervals old, the least a starter on another host
	// watches it before taking over.
	StallAfter time.Duration
	// Log receives what the keeper mends, or fails to do, without losing
	// the directory: a segment renewed after ipcrm or RemoveIPC, a failed
	// heartbeat or record update. Nil discards it.
	Log *slog.Logger

	hook func(op string) // tests: called before every storage operation
}

// A Keeper keeps a held directory for a long-running holder, as dirlockd
// run does for a server: every Options.Recheck it checks the lock
// ((*Lock).Check), gives it a new segment if only the segment was lost
// ((*Lock).RenewSegment), and writes the heartbeat ((*Lock).Heartbeat). It
// writes the record updates it is given (SetStatus, SetExtra), coalesced.
//
// All of that storage work happens on the Keeper's own goroutine. A storage
// that stops answering (a hard NFS mount) blocks that goroutine and no
// other: the caller still reacts at once to what it waits for, and learns
// from Lost that the storage stalled. A stalled storage queues nothing:
// only the latest update of each field waits to be written.
//
// With Options.Recheck zero the Keeper neither rechecks nor watches for
// stalls; it only writes updates.
type Keeper struct {
	lock  *Lock
	dir   string
	log   *slog.Logger
	every time.Duration // Options.Recheck; 0: never
	stall time.Duration
	hook  func(string)

	mu     sync.Mutex
	status pidfile.Status    // wanted status; "" for no change
	extra  map[string]string // wanted extras; "" deletes

	poke chan struct{}  // something to write
	lost chan error     // losses and stalls, for the caller
	busy atomic.Int64   // when the storage operation under way began (UnixNano); 0 idle
	quit chan struct{}  // closed by Stop
	done sync.WaitGroup // the goroutines
	once sync.Once      // closes quit
}

// Keep starts a Keeper for l. A Lock has at most one Keeper at a time;
// Release stops it. Keep fails if l is released or already kept.
func (l *Lock) Keep(opts KeepOptions) (*Keeper, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.released:
		return nil, errors.New("keep: lock already released")
	case l.keeper != nil:
		return nil, errors.New("keep: lock already kept by another Keeper")
	}
	k := &Keeper{
		lock: l, dir: l.rec.DataDir, log: opts.Log, every: l.opts.Recheck, stall: opts.StallAfter, hook: opts.hook,
		extra: map[string]string{},
		poke:  make(chan struct{}, 1),
		lost:  make(chan error, 1),
		quit:  make(chan struct{}),
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.stall == 0 {
		k.stall = max(2*k.every, StallFloor)
	}
	l.keeper = k
	k.done.Add(1)
	go k.work()
	if k.every > 0 {
		k.done.Add(1)
		go k.watch()
	}
	return k, nil
}

// Lost returns the channel on which the Keeper reports that the directory
// may no longer be held: an error matching ErrLost (*LostError) when a
// recheck or heartbeat finds that it is not, and one matching ErrStalled
// (*StallError) when a storage operation has run longer than StallAfter.
// The Keeper goes on rechecking after either, so a holder that only logs
// them hears of each loss found while the previous one was received (it
// drops a loss while one waits unreceived), and of each new stall. Stop
// does not close the channel.
func (k *Keeper) Lost() <-chan error { return k.lost }

// SetStatus asks for the record's status to become s.
func (k *Keeper) SetStatus(s pidfile.Status) {
	k.mu.Lock()
	k.status = s
	k.mu.Unlock()
	k.wake()
}

// SetExtra asks for the record's extra field key to become value; an empty
// value removes it.
func (k *Keeper) SetExtra(key, value string) {
	k.mu.Lock()
	k.extra[key] = value
	k.mu.Unlock()
	k.wake()
}

// Stop ends the Keeper after the storage operation under way, if any, and
// waits for its goroutines to return. Updates not yet written are dropped:
// Release writes the final record. Stop is idempotent; Release calls it.
func (k *Keeper) Stop() {
	k.once.Do(func() { close(k.quit) })
	k.done.Wait()
	k.lock.mu.Lock()
	if k.lock.keeper == k {
		k.lock.keeper = nil
	}
	k.lock.mu.Unlock()
}

func (k *Keeper) wake() {
	select {
	case k.poke <- struct{}{}:
	default:
	}
}

// report passes err to the caller, unless a loss waits unreceived.
func (k *Keeper) report(err error) {
	select {
	case k.lost <- err:
	default:
	}
}

// work does the storage operations, one at a time.
func (k *Keeper) work() {
	defer k.done.Done()
	var tick <-chan time.Time
	if k.every > 0 {
		t := time.NewTicker(k.every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-k.quit:
			return
		case <-k.poke:
			k.write()
		case <-tick:
			k.recheck()
		}
	}
}

// watch reports a storage operation that runs longer than the stall limit,
// once for each operation.
func (k *Keeper) watch() {
	defer k.done.Done()
	t := time.NewTicker(min(time.Second, k.stall/4))
	defer t.Stop()
	var reported int64 // the start of the operation last reported
	for {
		select {
		case <-k.quit:
			return
		case <-t.C:
		}
		began := k.busy.Load()
		if began == 0 || began == reported || time.Since(time.Unix(0, began)) <= k.stall {
			continue
		}
		reported = began
		k.report(&StallError{Dir: k.dir, Limit: k.stall})
	}
}

// begin marks a storage operation as under way; the function it returns
// marks it done.
func (k *Keeper) begin(op string) func() {
	k.busy.Store(time.Now().UnixNano())
	if k.hook != nil {
		k.hook(op)
	}
	return func() { k.busy.Store(0) }
}

// write applies the pending updates in one record update.
func (k *Keeper) write() {
	k.mu.Lock()
	status, extra := k.status, k.extra
	k.status, k.extra = "", map[string]string{}
	k.mu.Unlock()
	if status == "" && len(extra) == 0 {
		return
	}
	defer k.begin("update")()
	err := k.lock.Update(func(r *pidfile.Record) {
		if status != "" {
			r.Status = status
		}
		for key, v := range extra {
			if v == "" {
				delete(r.Extra, key)
				continue
			}
			if r.Extra == nil {
				r.Extra = map[string]string{}
			}
			r.Extra[key] = v
		}
	})
	if err == nil {
		return
	}
	k.log.Error("cannot update the pidfile", "status", status, "fields", extra, "err", err)
	// Keep the updates that a later write may still carry out, unless
	// newer ones replaced them.
	k.mu.Lock()
	if k.status == "" {
		k.status = status
	}
	for key, v := range extra {
		if _, ok := k.extra[key]; !ok {
			k.extra[key] = v
		}
	}
	k.mu.Unlock()
}

// recheck checks the lock, replaces a removed segment, and writes the
// heartbeat.
func (k *Keeper) recheck() {
	defer k.begin("recheck")()
	err := k.lock.Check()
	if errors.Is(err, ErrSegmentLost) {
		// The lock is still ours: the segment witness was removed from
		// under us (ipcrm, or logind's RemoveIPC). Put a new one in its
		// place rather than stop a holder that nobody else can reach.
		old := k.lock.Record()
		attrs := []any{"old_shm_key", pidfile.FormatKey(old.ShmKey), "old_shm_id", old.ShmID}
		if errRenew := k.lock.RenewSegment(); errRenew != nil {
			k.log.Error(err.Error(), attrs...)
			k.log.Error("the recheck failed", "err", fmt.Errorf("cannot replace the removed shared memory segment: %w", errRenew))
			return
		}
		rec := k.lock.Record()
		k.log.Warn(err.Error()+"; the lock is still ours: a new segment took its place",
			append(attrs, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)...)
		err = nil
	}
	if err == nil {
		err = k.lock.Heartbeat()
	}
	switch {
	case errors.Is(err, ErrLost):
		k.report(err)
	case err != nil:
		k.log.Error("the recheck failed", "err", err)
	}
}
