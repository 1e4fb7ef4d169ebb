package stress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// The protocol between the stress parent and a worker process. The worker
// writes lines to its standard output; the parent answers with single bytes
// on the worker's standard input, and closes it to tell the worker to stop.
const (
	// MsgHolding WAIT_NS TOKEN: the worker holds the directory, took
	// WAIT_NS to acquire it, and has logged its enter.
	MsgHolding = "holding"
	// MsgFail TEXT: the worker is about to exit because of TEXT.
	MsgFail = "fail"
	// With a kill rate, after each MsgHolding the worker waits for a
	// verdict: go on, or stay inside this hold until SIGKILLed. A doomed
	// worker never leaves its hold, so the kill lands inside it, never in
	// Acquire, where a kill between creating the segment and attaching it
	// would leave a segment nobody can prove stale (design.md, known
	// windows).
	VerdictGo   = 'c'
	VerdictKill = 'k'
)

// WorkerConfig is what a worker needs.
type WorkerConfig struct {
	Dir  string            // the data directory, absolute
	Opts interlock.Options // as given; Wait is set to wait until stopped
	Hold time.Duration     // how long each hold lasts
	Host string            // the host label its events carry
	ID   string            // its writer id, chosen by the parent
	Run  string            // the parent's writer id
	// Verdicts: wait for the parent's verdict after each MsgHolding (the
	// parent kills some holds).
	Verdicts bool
	In       io.Reader // verdicts; end of file means stop
	Out      io.Writer // MsgHolding lines
	// Lease, if set, is the lease each hold takes after the local
	// interlock and ends before it (stress --etcd), as run takes it.
	Lease *lease.Guard
}

type worker struct {
	cfg      WorkerConfig
	log      *writer
	out      *bufio.Writer
	verdicts chan byte
	stop     chan struct{} // closed at end of In
	// counter is the counter file, kept open between holds on local
	// storage (as the log is; see writer), opened for each hold on shared
	// storage, where the open revalidates what other hosts wrote.
	counter *os.File
}

// Work acquires and releases the data directory in a loop, through run's
// guards, holding it each time for cfg.Hold: it logs an enter with the
// counter it read, tells the parent, sleeps, writes the counter plus one,
// logs an exit, and releases.
// It returns nil once In is closed (or ctx is done), after finishing the
// hold it is in.
func Work(ctx context.Context, cfg WorkerConfig) error {
	lw, err := newWriter(cfg.Dir, cfg.ID, cfg.Run, cfg.Host)
	if err != nil {
		return err
	}
	w := &worker{cfg: cfg, log: lw, out: bufio.NewWriter(cfg.Out), verdicts: make(chan byte, 1), stop: make(chan struct{})}
	defer func() {
		lw.Close()
		if w.counter != nil {
			w.counter.Close()
		}
	}()
	go w.read()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	g := newGuards(cfg.Dir, cfg.Opts, cfg.Lease)
	for ctx.Err() == nil {
		t0 := time.Now()
		if err := g.acquire(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting
			}
			return err
		}
		err := w.hold(g.token(), g.fence(), time.Since(t0))
		if rerr := g.release(); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		// On shared storage Acquire polls, so a worker that asked again
		// at once would win nearly every time, and the holds, one
		// worker's long streaks, would rarely hand over between
		// processes, let alone hosts. A pause lets the waiters in.
		// (Locally waiters are blocked in the kernel, which hands them
		// the lock at the release.)
		select {
		case <-time.After(rand.N(2*cfg.Hold + 1)):
		case <-ctx.Done():
		}
	}
	return nil
}

// read passes the parent's verdicts on, and closes stop at end of file.
func (w *worker) read() {
	b := make([]byte, 1)
	for {
		n, err := w.cfg.In.Read(b)
		if n == 1 {
			select {
			case w.verdicts <- b[0]:
			default: // unasked for: the parent broke the protocol; ignore
			}
		}
		if err != nil {
			close(w.stop)
			return
		}
	}
}

// hold does the work of one hold: the counter's read-sleep-write between an
// enter and an exit event.
func (w *worker) hold(token string, fence int64, wait time.Duration) error {
	f := w.counter
	if f == nil {
		var err error
		if f, err = openCounter(w.cfg.Dir); err != nil {
			return err
		}
	}
	keep := !w.log.sync
	w.counter = nil
	defer func() {
		if w.counter == nil {
			f.Close()
		}
	}()
	v, err := readCounter(f)
	enter := Event{Ev: EvEnter, Token: token, Fence: fence, Counter: v, WaitNS: max(wait.Nanoseconds(), 1)}
	if errors.Is(err, errCounter) {
		// Evidence, not a failure: leave the file as it is and say so.
		enter.Counter, enter.Err = -1, err.Error()
	} else if err != nil {
		return err
	}
	if err := w.log.Append(enter); err != nil {
		return err
	}
	fmt.Fprintf(w.out, "%s %d %s\n", MsgHolding, wait.Nanoseconds(), token)
	if err := w.out.Flush(); err != nil {
		return fmt.Errorf("tell the stress parent: %w", err)
	}
	doomed := false
	if w.cfg.Verdicts {
		select {
		case b := <-w.verdicts:
			doomed = b == VerdictKill
		case <-w.stop:
		}
	}
	time.Sleep(w.cfg.Hold)
	written := int64(-1)
	if enter.Counter >= 0 {
		written = enter.Counter + 1
		if err := writeCounter(f, written, w.log.sync); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	if keep {
		w.counter = f
	} else if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if doomed {
		// The parent SIGKILLs us any moment now. Should it die instead
		// (end of file), finish the hold as if nothing had happened.
		<-w.stop
	}
	return w.log.Append(Event{Ev: EvExit, Token: token, Counter: written})
}

// FailMessage is what a worker process that fails with err tells the
// parent before it exits.
func FailMessage(w io.Writer, err error) {
	fmt.Fprintf(w, "%s %s\n", MsgFail, strings.ReplaceAll(err.Error(), "\n", " "))
}
