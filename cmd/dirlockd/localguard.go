package main

import (
	"log/slog"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/internal/supervise"
)

// localGuard is the local interlock as the supervisor's guard: the lock and
// its interlock.Keeper, which rechecks it, heartbeats and writes its record
// off the supervisor's goroutine. A loss or a stalled storage the Keeper
// reports is a loss; the supervisor applies --on-lost. It has no deadlines
// and no helper processes, and is released last, once the server's tree is
// gone.
type localGuard struct {
	lock   *interlock.Lock
	log    *slog.Logger
	keeper *interlock.Keeper // nil until start

	changed chan struct{}
	quit    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	pending []supervise.Event
}

func newLocalGuard(lock *interlock.Lock, log *slog.Logger) *localGuard {
	return &localGuard{lock: lock, log: log, changed: make(chan struct{}, 1)}
}

// start starts keeping the lock, and watching the Keeper's losses.
func (l *localGuard) start() (*interlock.Keeper, error) {
	k, err := l.lock.Keep(interlock.KeepOptions{Log: l.log})
	if err != nil {
		return nil, err
	}
	l.keeper = k
	l.quit, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.quit:
				return
			case err := <-k.Lost():
				l.post(supervise.Event{Lost: err})
			}
		}
	}()
	return k, nil
}

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

// Release stops the Keeper and releases the interlock: the record says
// stopped, which, the server's tree gone, proves that nobody is left.
func (l *localGuard) Release() error {
	if l.keeper != nil {
		close(l.quit)
		<-l.done
		l.keeper.Stop()
	}
	err := l.lock.Release()
	if err != nil {
		l.log.Error("release incomplete", "err", err)
	}
	l.log.Info("released the data directory")
	return err
}
