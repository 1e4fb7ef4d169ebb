package stress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// Command is "dirlockd stress" once its flags are read: a run on this
// host (Run), then the check of every host's log (Check) and the report;
// or a worker process (Work); or, with Verify, the check alone.
type Command struct {
	Config          // the run; Lease is set by Main from LeaseConfig
	Verify   bool   // check the witness files only: no worker
	JSON     bool   // the report as one JSON object
	WorkerID string // run as a worker with this writer id
	RunID    string // the worker's run (its parent's writer id)
	// LeaseConfig, if set, makes each hold take the lease too (--etcd).
	LeaseConfig *lease.Config

	Log            *slog.Logger // with the data directory
	Stdout, Stderr io.Writer
	// Terminal shows progress on Stderr.
	Terminal bool
	// Exit is the exit status for an error that kept the directory from
	// being held (run's table).
	Exit func(error) int
}

// Main runs the command and returns its exit status: 0 PASS, 1 FAIL or
// INCONCLUSIVE, or Exit's for an error.
func (c *Command) Main() int {
	if c.LeaseConfig != nil {
		// Each process (the parent, every worker) has an agent of its
		// own, which renews the lease of the hold under way when its
		// process asks, as run's does. Dial asks who holds the key before
		// any worker starts: an etcd that does not answer is one clear
		// line, not a failure of every worker.
		g, err := lease.Dial(*c.LeaseConfig, true, nil)
		if err != nil {
			if c.WorkerID != "" {
				FailMessage(c.Stdout, err)
			} else {
				c.Log.Error("cannot stress with a lease: "+err.Error(), "lease_key", c.LeaseConfig.Key)
			}
			g.Release()
			return c.Exit(err)
		}
		defer g.Release()
		c.Lease = g
	}
	if c.WorkerID != "" {
		return c.work()
	}
	var run *RunReport
	if !c.Verify {
		st, code := c.run()
		if code != 0 {
			return code
		}
		run = NewRunReport(c.Config, st)
	}
	res, err := Check(c.Dir)
	if err != nil {
		c.Log.Error("cannot check the witness files", "err", err)
		return exitcode.Internal
	}
	rep := NewReport(c.Dir, run, res)
	if c.JSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintf(c.Stdout, "%s\n", b)
	} else {
		rep.WriteText(c.Stdout)
	}
	if rep.Verdict != Pass {
		return 1
	}
	return 0
}

// run is the parent's run on this host.
func (c *Command) run() (*Stats, int) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	// The first SIGINT or SIGTERM stops the workers between holds; a
	// second one kills, as by default.
	go func() { <-ctx.Done(); cancel() }()
	cfg := c.Config
	if c.Terminal {
		cfg.Progress = func(p Progress) {
			fmt.Fprintf(c.Stderr, "\r%6.1fs  %d acquisitions  %.1f/s  p99 %s  killed %d  violations %d\033[K",
				p.Elapsed.Seconds(), p.Acquisitions, p.Rate, Dur(p.P99), p.Killed, p.Violations)
		}
	}
	var key string
	if c.LeaseConfig != nil {
		key = c.LeaseConfig.Key
	}
	c.Log.Info("stressing the interlock", "host", c.Host, "workers", c.Workers, "duration", c.Duration, "hold", c.Hold, "kill_rate", c.KillRate, "lease_key", key)
	st, err := Run(ctx, cfg)
	if cfg.Progress != nil {
		fmt.Fprint(c.Stderr, "\r\033[K")
	}
	if err == nil {
		return st, 0
	}
	code := c.Exit(err)
	var we *WorkerError
	if errors.As(err, &we) && (we.Code == exitcode.Invalid || we.Code == exitcode.Orphans || we.Code == exitcode.Unavailable) {
		code = we.Code
	}
	switch code {
	case exitcode.Invalid:
		c.Log.Error("the data directory cannot carry the interlock: " + err.Error())
	case exitcode.Orphans:
		c.Log.Error("cannot stress the data directory: " + err.Error())
	default:
		c.Log.Error("stress failed: " + err.Error())
	}
	return nil, code
}

// work is a worker process: it runs until the parent closes its standard
// input, or until SIGTERM or SIGINT, and tells the parent why it failed if
// it does.
func (c *Command) work() int {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	err := Work(ctx, WorkerConfig{Dir: c.Dir, Opts: c.Opts, Hold: c.Hold, Host: c.Host, ID: c.WorkerID, Run: c.RunID,
		Verdicts: c.KillRate > 0, In: os.Stdin, Out: c.Stdout, Lease: c.Lease})
	if err == nil {
		return 0
	}
	FailMessage(c.Stdout, err)
	return c.Exit(err)
}
