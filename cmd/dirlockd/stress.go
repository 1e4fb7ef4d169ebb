package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/stress"
	"github.com/dirlockd/dirlockd/pidfile"
)

const stressAbout = `Test whether a storage keeps dirlockd's interlock. Worker processes acquire and
release the data directory in a loop, as servers starting one after another
would, and every hold reports to two witness files in DIR:
dirlockd-stress.log (a line when a hold begins, ends, or is killed) and
dirlockd-stress.counter (each hold reads it, sleeps --hold, writes it plus
one). Two holders at once show up as overlapping holds, torn or lost log
lines, or lost increments. When the workers stop, the whole log, of every
host that ran against DIR, is checked, and a report ends with the verdict:
  PASS          no violation: the storage kept the interlock, across every
                host the report names
  FAIL          two holders overlapped, or writes made under the lock were
                lost: do not run a database on this storage with dirlockd's
                interlock as its only protection
  INCONCLUSIVE  nothing was held, so nothing was tested (is DIR in use?)

Shared storage: run the same command at the same time on several clients of
the storage (NFS, CIFS, a cluster filesystem), with the same DIR on the shared
mount. Each host's holds are logged under --host-label, the hostname unless
given: give distinct labels where hostnames collide (containers). Each run
checks the log when it ends; once every host has finished, run
"dirlockd stress -D DIR --verify" on any of them for the final verdict. With
--kill-rate, some workers are SIGKILLed inside their hold to exercise the
takeover of a dead holder's directory; a kill on one host cannot be timed
against a hold on another, so for a verdict across hosts run once with
--kill-rate 0 as well.

Never point it at a live server's data directory: it takes the same lock (a
server could not start meanwhile, and the workers would wait all along for a
server that holds it). Use a scratch directory on the same mount, made with
install -d -m 0700 DIR.

The witness files are created when missing and never truncated, so that runs
on several hosts add to one log. To start afresh, delete both (never one
alone) while no run is going on.

With --etcd ENDPOINTS --lease-key NAME, each hold takes a lease on etcd too,
after the local lock and released before it, as run --etcd does (waiting on a
watch while another holder has it), and logs the hold's fencing token: the
check then also requires the tokens to grow from each hold to the next. Run
it on several hosts whose storage's locks do not cross hosts (NFS nolock) to
see the lease alone keep one holder (add --allow-local-locks where dirlockd
would refuse such a mount). A killed worker's lease ends only after
--lease-ttl, so keep --kill-rate low.

A progress line is shown on standard error when it is a terminal.

Exit status: 0 PASS; 1 FAIL or INCONCLUSIVE; 64 usage; 69 etcd unavailable
(--etcd); 70 internal error; 76 processes of an earlier holder still hold the
directory; 78 the directory cannot carry the interlock (invalid directory or pidfile, no lock method
accepted by the filesystem, a full or read-only filesystem, witness files it
may not write).`

const stressExamples = `  install -d -m 0700 /mnt/nfs/scratch
  dirlockd stress -D /mnt/nfs/scratch                # this host alone, 10s
  dirlockd stress -D /mnt/nfs/scratch --duration 2m  # on hosts A and B at once
  dirlockd stress -D /mnt/nfs/scratch --verify       # once A and B are done
  dirlockd stress -D /mnt/nfs/scratch --kill-rate 0.1 --json | jq -r .summary
  dirlockd stress -D /mnt/nfs/scratch --etcd etcd1:2379 --lease-key /stress/a
`

type stressFlags struct {
	workers  int
	duration time.Duration
	hold     time.Duration
	killRate float64
	host     string
	verify   bool
	json     bool
	worker   string // hidden: run as a worker with this writer id
	run      string // hidden: the worker's run (its parent's writer id)
	lease    leaseFlags
}

var stressDoc = doc{
	name:    "stress",
	summary: "does this storage keep the interlock? (on several clients at once)",
	synopsis: []string{
		"stress -D DIR [--workers N] [--duration D] [--kill-rate R] [flags]",
		"stress -D DIR --verify [--json]",
	},
	brief: `Test whether a storage keeps dirlockd's interlock: workers acquire and release
DIR in a loop, every hold reports to witness files in DIR, and a report ends
with PASS, FAIL (two holders overlapped or writes were lost) or INCONCLUSIVE.
Use a scratch directory, never a live server's. For shared storage, run it at
once on several clients, then --verify on one. To start afresh, delete both
witness files (never one alone) while no run is going on. Exit status: 0 PASS;
1 FAIL or INCONCLUSIVE; 64 usage; 69 etcd unavailable; 76 orphans; 78 unfit.`,
	about:    stressAbout,
	examples: stressExamples,
}

func stressFlagSet(g *globals, f *stressFlags, stderr io.Writer) *pflag.FlagSet {
	fs := command(&stressDoc, g, stderr)
	fs.IntVar(&f.workers, "workers", 4, "worker processes on this host")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long the workers run")
	fs.DurationVar(&f.hold, "hold", 5*time.Millisecond, "how long each hold lasts")
	fs.Float64Var(&f.killRate, "kill-rate", 0, "fraction of holds whose worker is SIGKILLed")
	cli.Detail(fs, "kill-rate", "From 0 to 1: those workers are killed inside their hold, to exercise the takeover of a dead holder's directory.")
	fs.StringVar(&f.host, "host-label", "", "this host's name in the log (default hostname)")
	cli.Detail(fs, "host-label", "Distinct on every client of the storage.")
	fs.BoolVar(&f.verify, "verify", false, "check the witness files of every run; no worker")
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object")
	fs.StringVar(&f.worker, "worker", "", "run as a worker with this writer id (internal)")
	fs.StringVar(&f.run, "run", "", "the run a worker belongs to (internal)")
	fs.MarkHidden("worker")
	fs.MarkHidden("run")
	addLeaseFlags(fs, &f.lease, leaseStress)
	return fs
}

func cmdStress(args []string, stdout, stderr io.Writer) int {
	var g globals
	var f stressFlags
	fs := stressFlagSet(&g, &f, stderr)
	rest, err := g.parse(fs, args, stdout, stderr)
	if err != nil {
		return exitFor(err)
	}
	usageErr := func(format string, a ...any) int { return usageError(stderr, "stress", format, a...) }
	withLease, err := f.lease.settle(fs)
	if err != nil {
		return usageErr("%v", err)
	}
	if withLease && f.verify {
		return usageErr("--etcd does not apply to --verify, which starts no worker")
	}
	if len(rest) > 0 {
		return usageErr("unexpected argument %q (the data directory goes with -D)", rest[0])
	}
	if f.verify {
		for _, name := range []string{"workers", "duration", "hold", "kill-rate", "host-label"} {
			if fs.Changed(name) {
				return usageErr("--%s does not apply to --verify, which starts no worker", name)
			}
		}
	}
	switch {
	case f.workers < 1 || f.workers > 1024:
		return usageErr("--workers %d: want 1 to 1024", f.workers)
	case f.duration <= 0:
		return usageErr("--duration %v: want a positive duration", f.duration)
	case f.hold < 0:
		return usageErr("--hold %v: must not be negative", f.hold)
	case !(f.killRate >= 0 && f.killRate <= 1):
		return usageErr("--kill-rate %v: want a fraction from 0 to 1", f.killRate)
	case fs.Changed("host-label") && f.host == "":
		return usageErr("--host-label must not be empty")
	}
	if f.host == "" {
		if f.host, err = os.Hostname(); err != nil {
			g.log.Error("cannot read the hostname; pass --host-label", "err", err)
			return exitcode.Internal
		}
	}
	dir, _, err := pidfile.CheckDir(g.dirs[0], pidfile.ForStart)
	if err != nil {
		g.log.Error("cannot stress the data directory: "+err.Error(), "datadir", g.dirs[0])
		return exitcode.Invalid
	}
	c := &stress.Command{
		Config: stress.Config{Dir: dir, Opts: g.opts, Host: f.host, Workers: f.workers, Duration: f.duration,
			Hold: f.hold, KillRate: f.killRate, Command: workerCommand(dir, f.host, args, stderr)},
		Verify: f.verify, JSON: f.json, WorkerID: f.worker, RunID: f.run,
		Log: g.log.With("datadir", dir), Stdout: stdout, Stderr: stderr, Terminal: cli.IsTerminal(stderr), Exit: stressExit,
	}
	if withLease {
		cfg := f.lease.config()
		c.LeaseConfig = &cfg
	}
	return c.Main()
}

// stressExit is the exit status for err, as for run: 78 for the data
// directory's condition rather than dirlockd's failure (and for witness
// files it may not write), 76 for survivors of an earlier holder.
func stressExit(err error) int {
	if errors.Is(err, unix.EACCES) {
		return exitcode.Invalid
	}
	return startExit(err, 0)
}

// workerCommand returns how the stress parent starts a worker: this same
// binary, through /proc/self/exe (still the right one if the file was
// replaced since), with the parent's command line, so that every global flag
// reaches the worker's Acquire. Workers get a process group of their own,
// so that a terminal's Ctrl-C reaches the parent alone, which then stops
// them between holds.
func workerCommand(dir, host string, args []string, stderr io.Writer) func(run, id string) *exec.Cmd {
	return func(run, id string) *exec.Cmd {
		cmd := exec.Command("/proc/self/exe", append([]string{"stress", "-D", dir, "--host-label", host, "--run", run, "--worker", id}, args...)...)
		cmd.Args[0] = "dirlockd"
		cmd.Env = childEnv(os.Environ())
		cmd.Stderr = stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return cmd
	}
}
