package main

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/pidfile"
)

// recorder does all of run's storage work on a goroutine of its own: record
// updates, the recheck and the heartbeat. A storage that stops answering (a
// hard NFS mount) blocks that goroutine and nothing else, so the supervisor
// still handles signals and the server's exit at once, and learns that the
// storage stalled from how long the recorder has been busy.
//
// Updates are coalesced: the supervisor says what the record should say,
// and the recorder writes the latest wish when it can. A stalled storage
// thus queues nothing.
type recorder struct {
	lock    *interlock.Lock
	log     *slog.Logger
	recheck time.Duration // 0: never

	mu      sync.Mutex
	status  pidfile.Status    // wanted status; "" for no change
	extra   map[string]string // wanted extras; "" deletes
	poke    chan struct{}     // something to write
	results chan checkResult  // outcomes of rechecks, for the supervisor
	busy    atomic.Int64      // when the current storage operation began (UnixNano); 0 idle
	quit    chan struct{}
	exited  chan struct{}
}

// checkResult is the outcome of one recheck.
type checkResult struct {
	err error // the recheck failed: the interlock is lost (ErrLost), or the heartbeat failed
	// removed is set when the segment witness had been removed while the
	// lock was still ours; renewed when a new segment took its place.
	removed  error
	renewed  bool
	oldKey   int
	oldShmID int
}

func newRecorder(l *interlock.Lock, log *slog.Logger, recheck time.Duration) *recorder {
	r := &recorder{
		lock: l, log: log, recheck: recheck,
		extra:   map[string]string{},
		poke:    make(chan struct{}, 1),
		results: make(chan checkResult, 4),
		quit:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	go r.loop()
	return r
}

// SetStatus asks for the record's status to become s.
func (r *recorder) SetStatus(s pidfile.Status) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
	r.wake()
}

// SetExtra asks for the record's extra key k to become v ("" removes it).
func (r *recorder) SetExtra(k, v string) {
	r.mu.Lock()
	r.extra[k] = v
	r.mu.Unlock()
	r.wake()
}

func (r *recorder) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Results delivers the outcome of every recheck.
func (r *recorder) Results() <-chan checkResult { return r.results }

// BusyFor says how long the current storage operation has been running; 0
// when none is.
func (r *recorder) BusyFor() time.Duration {
	t := r.busy.Load()
	if t == 0 {
		return 0
	}
	return time.Since(time.Unix(0, t))
}

// Stop ends the recorder after the operation under way, if any; wishes not
// yet written are dropped (Release writes the final record).
func (r *recorder) Stop() {
	close(r.quit)
	<-r.exited
}

func (r *recorder) loop() {
	defer close(r.exited)
	var tick <-chan time.Time
	if r.recheck > 0 {
		t := time.NewTicker(r.recheck)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-r.quit:
			return
		case <-r.poke:
			r.write()
		case <-tick:
			res := r.check()
			select {
			case r.results <- res:
			case <-r.quit:
				return
			}
		}
	}
}

// write applies the pending wishes in one record update.
func (r *recorder) write() {
	r.mu.Lock()
	status, extra := r.status, r.extra
	r.status, r.extra = "", map[string]string{}
	r.mu.Unlock()
	if status == "" && len(extra) == 0 {
		return
	}
	r.busy.Store(time.Now().UnixNano())
	defer r.busy.Store(0)
	err := r.lock.Update(func(p *pidfile.Record) {
		if status != "" {
			p.Status = status
		}
		for k, v := range extra {
			if v == "" {
				delete(p.Extra, k)
				continue
			}
			if p.Extra == nil {
				p.Extra = map[string]string{}
			}
			p.Extra[k] = v
		}
	})
	if err != nil {
		r.log.Error("cannot update the pidfile", "status", status, "fields", extra, "err", err)
		// Keep the wishes that a later write may still carry out, unless
		// newer ones replaced them.
		r.mu.Lock()
		if r.status == "" {
			r.status = status
		}
		for k, v := range extra {
			if _, ok := r.extra[k]; !ok {
				r.extra[k] = v
			}
		}
		r.mu.Unlock()
	}
}

// check runs the interlock's Check, replaces a removed segment, and writes
// the heartbeat.
func (r *recorder) check() (res checkResult) {
	r.busy.Store(time.Now().UnixNano())
	defer r.busy.Store(0)
	err := r.lock.Check()
	if errors.Is(err, interlock.ErrSegmentLost) {
		// The lock is still ours: the segment witness was removed from
		// under us (ipcrm, or logind's RemoveIPC). Put a new one in its
		// place rather than stop a server that nobody else can reach.
		rec := r.lock.Record()
		res.removed, res.oldKey, res.oldShmID = err, rec.ShmKey, rec.ShmID
		if err = r.lock.RenewSegment(); err != nil {
			res.err = fmt.Errorf("cannot replace the removed shared memory segment: %w", err)
			return res
		}
		res.renewed = true
	}
	if err == nil {
		err = r.lock.Heartbeat()
	}
	res.err = err
	return res
}
