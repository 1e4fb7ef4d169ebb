package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/supervise"
	"github.com/dirlockd/dirlockd/pidfile"
)

// localGuard is the local interlock as the supervisor's guard: the lock,
// and the recorder (recorder.go) that rechecks it and writes its record
// off the supervisor's goroutine. A recheck that finds the lock lost, or a
// storage that stalls past stallLimit, is a loss; the supervisor applies
// --on-lost. It has no deadlines and no helper processes, and is released
// last, once the server's tree is gone.
type localGuard struct {
	lock    *interlock.Lock
	log     *slog.Logger
	recheck time.Duration
	rec     *recorder // nil until start

	changed chan struct{}
	quit    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	pending []supervise.Event
}

func newLocalGuard(lock *interlock.Lock, log *slog.Logger, recheck time.Duration) *localGuard {
	return &localGuard{lock: lock, log: log, recheck: recheck, changed: make(chan struct{}, 1)}
}

// start starts the recorder and the watch of its rechecks.
func (l *localGuard) start() *recorder {
	l.rec = newRecorder(l.lock, l.log, l.recheck)
	l.quit, l.done = make(chan struct{}), make(chan struct{})
	go l.watch()
	return l.rec
}

// watch turns the recorder's rechecks and stalls into events.
func (l *localGuard) watch() {
	defer close(l.done)
	var stallTick <-chan time.Time
	if l.recheck > 0 {
		t := time.NewTicker(min(time.Second, l.stallLimit()/4))
		defer t.Stop()
		stallTick = t.C
	}
	stalled := false // the current stall has been reported
	for {
		select {
		case <-l.quit:
			return
		case res := <-l.rec.Results():
			if err := l.rechecked(res); err != nil {
				l.post(supervise.Event{Lost: err})
			}
		case <-stallTick:
			switch d := l.rec.BusyFor(); {
			case d == 0:
				stalled = false
			case d > l.stallLimit() && !stalled:
				stalled = true
				l.post(supervise.Event{Lost: fmt.Errorf("the storage has not answered for %v: another host may take over", l.stallLimit())})
			}
		}
	}
}

// rechecked logs the outcome of a recheck, and returns the loss it found.
func (l *localGuard) rechecked(res checkResult) error {
	if res.removed != nil {
		rec := l.lock.Record()
		attrs := []any{"old_shm_key", pidfile.FormatKey(res.oldKey), "old_shm_id", res.oldShmID}
		if res.renewed {
			attrs = append(attrs, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)
			l.log.Warn(res.removed.Error()+"; the lock is still ours: a new segment took its place", attrs...)
		} else {
			l.log.Error(res.removed.Error(), attrs...)
		}
	}
	switch {
	case errors.Is(res.err, interlock.ErrLost):
		return res.err
	case res.err != nil:
		l.log.Error("the recheck failed", "err", res.err)
	}
	return nil
}

// stallLimit is how long a storage operation may take before the storage
// counts as gone: twice the recheck interval (the heartbeat is then three
// intervals old, the least a starter on another host watches it before
// taking over), and never less than stallFloor, so that a slow fsync on a
// busy disk is not a loss.
func (l *localGuard) stallLimit() time.Duration { return max(2*l.recheck, stallFloor) }

const stallFloor = 5 * time.Second

func (l *localGuard) post(ev supervise.Event) {
	l.mu.Lock()
	l.pending = append(l.pending, ev)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// childLockFD is the descriptor number of the locked pidfile in the server.
const childLockFD = 3

func (l *localGuard) Fields() map[string]string { return nil }

// Env is what the server learns of the interlock.
func (l *localGuard) Env() []string {
	rec := l.lock.Record()
	return []string{
		"DIRLOCKD_DATADIR=" + rec.DataDir,
		interlock.PidfileEnv + "=" + l.lock.File().Path(),
		"DIRLOCKD_LOCK_FD=" + strconv.Itoa(childLockFD),
		"DIRLOCKD_SHM_ID=" + strconv.Itoa(rec.ShmID),
		interlock.TokenEnv + "=" + rec.Token,
	}
}

func (l *localGuard) Changed() <-chan struct{} { return l.changed }

// Check returns the oldest loss not yet reported.
func (l *localGuard) Check() supervise.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return supervise.Event{}
	}
	ev := l.pending[0]
	l.pending = l.pending[1:]
	if len(l.pending) > 0 {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
	return ev
}

func (l *localGuard) Tree(proc.Tree)      {}
func (l *localGuard) Helpers() []int      { return nil }
func (l *localGuard) Overdue(bool, []int) {}
func (l *localGuard) HelperExited(int, unix.WaitStatus) (bool, supervise.Event) {
	return false, supervise.Event{}
}

// Release stops the recorder and releases the interlock: the record says
// stopped, which, the server's tree gone, proves that nobody is left.
func (l *localGuard) Release() error {
	if l.rec != nil {
		close(l.quit)
		<-l.done
		l.rec.Stop()
	}
	err := l.lock.Release()
	if err != nil {
		l.log.Error("release incomplete", "err", err)
	}
	l.log.Info("released the data directory")
	return err
}
