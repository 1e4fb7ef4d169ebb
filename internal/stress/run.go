package stress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// Config is a stress run on this host.
type Config struct {
	Dir      string            // the data directory, absolute
	Opts     interlock.Options // for every acquisition; Wait is ignored
	Host     string            // host label
	Workers  int               // worker processes at once
	Duration time.Duration
	Hold     time.Duration
	// KillRate is the fraction of holds whose worker is SIGKILLed inside,
	// at a random moment of [0, 2×Hold): before or after its counter
	// write. A replacement worker is started each time.
	KillRate float64
	// Command returns the command of a worker process of run with writer
	// id (which runs Work with Verdicts set when KillRate > 0). Run sets
	// its standard input and output.
	Command func(run, id string) *exec.Cmd
	// Progress, if set, is called every ProgressEvery while workers run.
	Progress func(Progress)
	// Lease, if set, is the lease the workers' holds take (see
	// WorkerConfig.Lease): the parent takes it too to log kills and the
	// end of the run, which are appends to the log like any other.
	Lease *lease.Guard
}

// ProgressEvery is how often Run reports progress.
const ProgressEvery = 250 * time.Millisecond

// Progress is a snapshot of a running stress.
type Progress struct {
	Elapsed      time.Duration
	Acquisitions int
	Rate         float64 // acquisitions per second
	P99          time.Duration
	Killed       int
	Violations   int // found so far in the combined log (overlaps only once proven)
}

// Stats are what this host's workers did.
type Stats struct {
	Acquisitions int
	Killed       int
	Elapsed      time.Duration
	Wait         Latencies
}

// WorkerError is a worker process that failed.
type WorkerError struct {
	PID  int
	Code int    // its exit status; -1 if a signal nobody expected killed it
	Msg  string // what it said (MsgFail), or how it ended
}

func (e *WorkerError) Error() string { return fmt.Sprintf("worker PID %d: %s", e.PID, e.Msg) }

type run struct {
	cfg    Config
	guards *guards // the parent's: for its own appends
	log    *writer // the parent's own: killed and stop events
	stop   chan struct{}
	kills  chan Event

	mu     sync.Mutex
	stats  Stats
	err    error
	failed chan struct{}
}

// Run starts cfg.Workers worker processes, replaces those it kills, stops
// them all after cfg.Duration or when ctx is done, and returns what they did.
// Kills are logged once the victim's death is confirmed, under the lock like
// every append, so that on shared storage they cannot tear another host's
// line. It does not check the log: see Check.
func Run(ctx context.Context, cfg Config) (*Stats, error) {
	if err := prepare(cfg.Dir); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	lw, err := newWriter(cfg.Dir, id, id, cfg.Host)
	if err != nil {
		return nil, err
	}
	defer lw.Close()
	r := &run{cfg: cfg, guards: newGuards(cfg.Dir, cfg.Opts, cfg.Lease), log: lw, stop: make(chan struct{}), kills: make(chan Event, 16), failed: make(chan struct{})}

	recCtx, cancelRec := context.WithCancel(context.Background())
	defer cancelRec()
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		if err := r.record(recCtx); err != nil {
			r.fail(err)
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			if err := r.slot(); err != nil {
				r.fail(err)
			}
		})
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var tail *Tail
	if cfg.Progress != nil {
		tail = NewTail(cfg.Dir)
	}
	timer := time.NewTimer(cfg.Duration)
	defer timer.Stop()
	tick := time.NewTicker(ProgressEvery)
	defer tick.Stop()
	// Each reason to stop is heard once: a closed channel would be ready
	// on every later turn.
	expired, cancelled, failed := timer.C, ctx.Done(), r.failed
	for {
		select {
		case <-expired:
		case <-cancelled:
		case <-failed:
		case <-tick.C:
			if cfg.Progress != nil && expired != nil {
				cfg.Progress(r.progress(start, tail))
			}
			continue
		case <-workersDone:
			r.mu.Lock()
			r.stats.Elapsed = time.Since(start)
			r.mu.Unlock()
			close(r.kills)
			// Kills still to log wait for the lock like everyone;
			// give up only if it stays held for long.
			t := time.AfterFunc(time.Minute, cancelRec)
			<-recDone
			t.Stop()
			r.mu.Lock()
			defer r.mu.Unlock()
			return &r.stats, r.err
		}
		expired, cancelled, failed = nil, nil, nil
		close(r.stop)
	}
}

func (r *run) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
		close(r.failed)
	}
}

func (r *run) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

func (r *run) progress(start time.Time, tail *Tail) Progress {
	v, _ := tail.Poll()
	r.mu.Lock()
	defer r.mu.Unlock()
	el := time.Since(start)
	return Progress{Elapsed: el, Acquisitions: r.stats.Acquisitions, Rate: float64(r.stats.Acquisitions) / el.Seconds(),
		P99: r.stats.Wait.Quantile(0.99), Killed: r.stats.Killed, Violations: v}
}

// slot keeps one worker running until the run stops.
func (r *run) slot() error {
	for !r.stopping() {
		killed, err := r.worker()
		if err != nil || !killed {
			return err
		}
	}
	return nil
}

// worker runs one worker process until it exits or is killed.
func (r *run) worker() (killed bool, err error) {
	id, err := newID()
	if err != nil {
		return false, err
	}
	cmd := r.cfg.Command(r.log.ID(), id)
	inR, inW, err := os.Pipe()
	if err != nil {
		return false, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return false, err
	}
	// Files, not io.Readers: exec then copies nothing in goroutines, and
	// Wait does not depend on the pipes being drained.
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return false, fmt.Errorf("start a worker: %w", err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		for range lines { // let the reader finish
		}
		outR.Close()
	}()

	stdin, stop := inW, r.stop
	defer func() {
		if stdin != nil {
			stdin.Close()
		}
	}()
	var said string
	for {
		select {
		case <-stop:
			// Only here, between holds or in one the worker may
			// finish: never while a kill is decided or pending.
			stdin.Close()
			stdin, stop = nil, nil
			continue
		case line, ok := <-lines:
			if !ok {
				return false, r.exited(cmd, said)
			}
			verb, rest, _ := strings.Cut(line, " ")
			switch verb {
			case MsgFail:
				said = rest
			case MsgHolding:
				ns, token, _ := strings.Cut(rest, " ")
				wait, _ := strconv.ParseInt(ns, 10, 64)
				r.mu.Lock()
				r.stats.Acquisitions++
				r.stats.Wait.Add(time.Duration(wait))
				r.mu.Unlock()
				if r.cfg.KillRate <= 0 {
					continue
				}
				// No new kills once stopping: the worker then
				// finishes its hold and exits.
				if stdin == nil || rand.Float64() >= r.cfg.KillRate {
					if stdin != nil {
						stdin.Write([]byte{VerdictGo})
					}
					continue
				}
				stdin.Write([]byte{VerdictKill})
				return r.kill(cmd, id, token)
			}
		}
	}
}

// kill SIGKILLs a doomed worker at a random moment of its hold, waits until
// it is dead and reaped, and queues its killed event.
func (r *run) kill(cmd *exec.Cmd, id, token string) (bool, error) {
	time.Sleep(rand.N(2*r.cfg.Hold + 1))
	sent := monoNow()
	// Our child, not yet reaped: its PID cannot have been reused.
	cmd.Process.Kill()
	cmd.Wait()
	dead, wall := monoNow(), time.Now().UTC().Format(time.RFC3339Nano)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		// It ended on its own before the signal: not a kill.
		return false, r.exited(cmd, "")
	}
	r.mu.Lock()
	r.stats.Killed++
	r.mu.Unlock()
	r.kills <- Event{Ev: EvKilled, Token: token, Victim: id, VictimPID: cmd.Process.Pid, SignalMono: sent, Mono: dead, Wall: wall}
	return true, nil
}

// exited reaps a worker that ended on its own and says whether that was
// expected.
func (r *run) exited(cmd *exec.Cmd, said string) error {
	if cmd.ProcessState == nil {
		cmd.Wait()
	}
	st := cmd.ProcessState
	switch {
	case st.ExitCode() == 0 && r.stopping():
		return nil
	case st.ExitCode() == 0:
		return &WorkerError{PID: st.Pid(), Code: 0, Msg: "exited before it was told to stop"}
	case said != "":
		return &WorkerError{PID: st.Pid(), Code: st.ExitCode(), Msg: said}
	}
	return &WorkerError{PID: st.Pid(), Code: st.ExitCode(), Msg: st.String()}
}

// record logs the kills, each under the lock, and then the end of the run:
// a checker may then treat a hold of this run that the log does not show
// ending as lost, never as a kill still to be logged.
func (r *run) record(ctx context.Context) error {
	var err error
	for ev := range r.kills {
		if err != nil {
			continue // keep draining: slots must not block
		}
		batch := []Event{ev}
	more:
		for {
			select {
			case e, ok := <-r.kills:
				if !ok {
					break more
				}
				batch = append(batch, e)
			default:
				break more
			}
		}
		err = r.locked(ctx, func() (err error) {
			for _, e := range batch {
				if err == nil {
					err = r.log.Append(e)
				}
			}
			return err
		})
		if err != nil {
			err = fmt.Errorf("log the kill of worker %s (PID %d): %w", ev.Victim, ev.VictimPID, err)
		}
	}
	r.mu.Lock()
	held := r.stats.Acquisitions > 0
	r.mu.Unlock()
	if err != nil || !held {
		// Nothing of this run in the log: no end to log either, and no
		// wait for a directory that may be held by a live server.
		return err
	}
	if err := r.locked(ctx, func() error { return r.log.Append(Event{Ev: EvStop}) }); err != nil {
		return fmt.Errorf("log the end of the run: %w", err)
	}
	return nil
}

// locked runs f holding the directory as a worker's hold does.
func (r *run) locked(ctx context.Context, f func() error) error {
	if err := r.guards.acquire(ctx); err != nil {
		return err
	}
	err := f()
	return errors.Join(err, r.guards.release())
}
