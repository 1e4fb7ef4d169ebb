package supervise

import (
	"context"
	"log/slog"
	"strconv"
	"sync"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/guard"
	"github.com/dirlockd/dirlockd/pidfile"
)

// LocalGuard is the local interlock as a guard: the lock (Acquire), and,
// while a server runs, its interlock.Keeper (Keep), which rechecks it,
// heartbeats and writes its record off the supervisor's goroutine. A loss
// or a stalled storage the Keeper reports is a loss; the supervisor applies
// OnLost. It has no deadlines and no helper processes, and is released
// last, once the server's tree is gone. stress takes it for each hold
// (Acquire, Release), without a Keeper.
type LocalGuard struct {
	dir  string
	opts interlock.Options
	log  *slog.Logger // nil: logs nothing

	lock    *interlock.Lock
	keeper  *interlock.Keeper // nil until Keep
	changed chan struct{}
	quit    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	pending []guard.Event
}

var _ guard.Guard = (*LocalGuard)(nil)

// NewLocalGuard guards dir, acquired with opts. log, if not nil, hears
// what the guard does, with the data directory once it is acquired.
func NewLocalGuard(dir string, opts interlock.Options, log *slog.Logger) *LocalGuard {
	return &LocalGuard{dir: dir, opts: opts, log: log, changed: make(chan struct{}, 1)}
}

// Acquire acquires the interlock (interlock.Acquire) and says what it
// took over.
func (l *LocalGuard) Acquire(ctx context.Context) error {
	lock, err := interlock.Acquire(ctx, l.dir, l.opts)
	if err != nil {
		return err
	}
	l.lock = lock
	if l.log != nil {
		l.log = l.log.With("datadir", lock.Record().DataDir)
		logAcquired(l.log, lock)
	}
	return nil
}

// Lock is the lock, once acquired.
func (l *LocalGuard) Lock() *interlock.Lock { return l.lock }

// Keep starts keeping the lock (interlock.Lock.Keep) while a server runs,
// and watching the Keeper's losses. The Keeper is the record's writer.
func (l *LocalGuard) Keep() (*interlock.Keeper, error) {
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
				l.post(guard.Event{Lost: err})
			}
		}
	}()
	return k, nil
}

func (l *LocalGuard) post(ev guard.Event) {
	l.mu.Lock()
	l.pending = append(l.pending, ev)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// LockFD is the descriptor number of the locked pidfile in the server:
// the Supervisor's first of Files.
const LockFD = 3

// Fields are none: the interlock's own record fields are the record's.
func (l *LocalGuard) Fields() map[string]string { return nil }

// Env is what the server learns of the interlock.
func (l *LocalGuard) Env() []string {
	rec := l.lock.Record()
	return []string{
		"DIRLOCKD_DATADIR=" + rec.DataDir,
		interlock.PidfileEnv + "=" + l.lock.File().Path(),
		"DIRLOCKD_LOCK_FD=" + strconv.Itoa(LockFD),
		"DIRLOCKD_SHM_ID=" + strconv.Itoa(rec.ShmID),
		interlock.TokenEnv + "=" + rec.Token,
	}
}

// Changed delivers a value when the Keeper has reported a loss.
func (l *LocalGuard) Changed() <-chan struct{} { return l.changed }

// Check returns the oldest loss not yet reported.
func (l *LocalGuard) Check() guard.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return guard.Event{}
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

// Release stops the Keeper and releases the interlock: the record says
// stopped, which, the server's tree gone, proves that nobody is left. The
// guard may then be acquired again.
func (l *LocalGuard) Release() error {
	if l.lock == nil {
		return nil
	}
	if l.keeper != nil {
		close(l.quit)
		<-l.done
		l.keeper.Stop()
		l.keeper = nil
	}
	err := l.lock.Release()
	l.lock = nil
	if l.log != nil {
		if err != nil {
			l.log.Error("release incomplete", "err", err)
		}
		l.log.Info("released the data directory")
	}
	return err
}

// logAcquired says what was acquired, and what it took over.
func logAcquired(log *slog.Logger, lock *interlock.Lock) {
	rec := lock.Record()
	log.Info("acquired the data directory", "lock_method", rec.LockMethod, "shm_key", pidfile.FormatKey(rec.ShmKey), "shm_id", rec.ShmID)
	if p := lock.Previous(); p != nil && !p.Clean() {
		log.Warn(p.String())
	}
	if t := lock.Takeover(); t != nil {
		log.Warn(t.String())
	}
	// What the locks are worth when the data directory is on shared
	// storage.
	fs, err := lock.File().Filesystem()
	if err != nil || !fs.Shared() {
		return
	}
	m := lock.File().Method()
	if why := fs.LocalOnly(m); why != "" {
		log.Warn("shared storage with host-local locks, allowed by --allow-local-locks: "+why, "fs", fs.Type, "mount", fs.MountPoint)
		return
	}
	log.Info("shared storage: "+fs.Guarantee(m), "fs", fs.Type, "mount", fs.MountPoint)
}
