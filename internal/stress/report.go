package stress

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dirlockd/dirlockd/internal/printable"
)

// The verdicts.
const (
	Pass         = "pass"
	Fail         = "fail"
	Inconclusive = "inconclusive" // nothing was held, so nothing was tested
)

// ShownViolations is how many violations the text report lists.
const ShownViolations = 20

// Report is the outcome of a stress run, or of a check of the witness files
// alone (Run nil).
type Report struct {
	Datadir string     `json:"datadir"`
	Verdict string     `json:"verdict"`
	Summary string     `json:"summary"`
	Run     *RunReport `json:"run,omitempty"`
	Log     *Result    `json:"log"`
}

// RunReport is what this host's workers did.
type RunReport struct {
	Host         string        `json:"host"`
	Workers      int           `json:"workers"`
	Duration     time.Duration `json:"duration_ns"` // asked for
	Elapsed      time.Duration `json:"elapsed_ns"`  // until the last worker stopped
	Hold         time.Duration `json:"hold_ns"`
	KillRate     float64       `json:"kill_rate"`
	Acquisitions int           `json:"acquisitions"`
	Rate         float64       `json:"rate_per_s"`
	Killed       int           `json:"killed"`
	Wait         Percentiles   `json:"wait_ns"`
}

// NewRunReport summarises a run of cfg that did st.
func NewRunReport(cfg Config, st *Stats) *RunReport {
	return &RunReport{Host: cfg.Host, Workers: cfg.Workers, Duration: cfg.Duration, Elapsed: st.Elapsed,
		Hold: cfg.Hold, KillRate: cfg.KillRate, Acquisitions: st.Acquisitions,
		Rate: float64(st.Acquisitions) / max(st.Elapsed.Seconds(), 1e-9), Killed: st.Killed, Wait: st.Wait.Percentiles()}
}

// NewReport judges the check of dir's witness files, after run (nil for a
// check alone).
func NewReport(dir string, run *RunReport, res *Result) *Report {
	r := &Report{Datadir: dir, Run: run, Log: res}
	hosts := make([]string, len(res.Hosts))
	for i, h := range res.Hosts {
		hosts[i] = h.Host
	}
	switch {
	case res.ViolationCount > 0:
		r.Verdict = Fail
		r.Summary = fmt.Sprintf("FAIL: %d violation(s) in %d holds on %s: two holders overlapped, or the storage lost or tore writes made under the lock. "+
			"This storage does not keep the interlock: do not run a database on it with dirlockd's interlock as its only protection.",
			res.ViolationCount, res.Entered, plural(len(hosts), "host"))
	case run != nil && run.Acquisitions == 0:
		r.Verdict = Inconclusive
		r.Summary = fmt.Sprintf("INCONCLUSIVE: no worker acquired %s in %v, so nothing was tested. Is it held by a live server (dirlockd status -D %s)? Use a scratch directory.",
			dir, run.Elapsed.Round(time.Millisecond), dir)
	case res.Entered == 0:
		r.Verdict = Inconclusive
		r.Summary = "INCONCLUSIVE: the log holds no hold, so nothing was tested. Run dirlockd stress against this directory first."
	case res.Pending > 0 && len(hosts) == 1:
		r.Verdict = Pass
		r.Summary = fmt.Sprintf("PASS: no violation in %d holds on host %s, %d of them not judged yet (see the notes): run dirlockd stress --verify once every run has finished.",
			res.Entered, hosts[0], res.Pending)
	case res.Pending > 0:
		r.Verdict = Pass
		r.Summary = fmt.Sprintf("PASS: no violation in %d holds on %d hosts (%s), %d of them not judged yet (see the notes): run dirlockd stress --verify once every host has finished.",
			res.Entered, len(hosts), strings.Join(hosts, ", "), res.Pending)
	case len(hosts) == 1:
		r.Verdict = Pass
		r.Summary = fmt.Sprintf("PASS: no violation in %d holds on host %s: this storage kept the interlock on this host. "+
			"To test it across hosts, run dirlockd stress on several clients at once against the same directory.", res.Entered, hosts[0])
	default:
		r.Verdict = Pass
		r.Summary = fmt.Sprintf("PASS: no violation in %d holds on %d hosts (%s): this storage kept the interlock across %d hosts.",
			res.Entered, len(hosts), strings.Join(hosts, ", "), len(hosts))
	}
	return r
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// Dur shows a latency for people, to three or four significant digits.
func Dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func (p Percentiles) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s", Dur(p.P50), Dur(p.P99), Dur(p.Max))
}

// WriteText writes the report for people. Host names and paths come from
// other hosts' lines in the shared log: they are written escaped.
func (r *Report) WriteText(w io.Writer) {
	if run := r.Run; run != nil {
		printable.Fprintf(w, "this run on host %s: %s, %v, hold %v, kill rate %g\n", run.Host, plural(run.Workers, "worker"), run.Duration, run.Hold, run.KillRate)
		fmt.Fprintf(w, "  acquisitions  %d in %.2fs, %.1f/s", run.Acquisitions, run.Elapsed.Seconds(), run.Rate)
		if run.Killed > 0 {
			fmt.Fprintf(w, "; %d holders SIGKILLed inside", run.Killed)
		}
		fmt.Fprintf(w, "\n  acquire wait  %s\n", run.Wait)
	}
	res := r.Log
	printable.Fprintf(w, "combined log of %s: %d holds on %s (%d completed, %d killed inside, %d unfinished)\n",
		r.Datadir, res.Entered, plural(len(res.Hosts), "host"), res.Completed, res.Killed, res.Unfinished)
	if len(res.Hosts) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  host\tholds\tcompleted\tkilled\tunfinished\twait p50\tp99\tmax")
		for _, h := range res.Hosts {
			printable.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", h.Host, h.Entered, h.Completed, h.Killed, h.Unfinished,
				Dur(h.Wait.P50), Dur(h.Wait.P99), Dur(h.Wait.Max))
		}
		tw.Flush()
	}
	if res.Takeovers > 0 {
		fmt.Fprintf(w, "  takeovers     %d holds began after the holder inside was SIGKILLed\n", res.Takeovers)
	}
	if res.Pending > 0 {
		fmt.Fprintf(w, "  pending       %d holds began while a holder was inside whose kill is not logged yet\n", res.Pending)
	}
	if res.CounterChecked {
		fmt.Fprintf(w, "  counter       %d\n", res.Counter)
	}
	if res.ViolationCount == 0 {
		fmt.Fprintln(w, "violations: none")
	} else {
		fmt.Fprintf(w, "violations: %d\n", res.ViolationCount)
		for i, v := range res.Violations {
			if i == ShownViolations {
				break
			}
			printable.Fprintf(w, "  %s\n", v)
		}
		if res.ViolationCount > ShownViolations {
			fmt.Fprintf(w, "  and %d more\n", res.ViolationCount-ShownViolations)
		}
	}
	for _, n := range res.Notes {
		printable.Fprintf(w, "note: %s\n", n)
	}
	printable.Fprintf(w, "%s\n", r.Summary)
}
