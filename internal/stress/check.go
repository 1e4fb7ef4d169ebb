package stress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The kinds of violation.
const (
	KindTorn    = "torn-line"      // a line that is not one whole event
	KindLost    = "lost-line"      // a writer's seq skips or repeats
	KindOverlap = "two-holders"    // a hold began while another was alive inside
	KindExit    = "unmatched-exit" // an exit that is not the end of the hold inside
	KindKill    = "unmatched-kill" // a kill inside a hold the log does not show
	KindCounter = "counter"        // the counter disagrees with the holds
	KindOrder   = "after-death"    // a worker's event after its death was confirmed
	KindFence   = "fencing-token"  // a hold's fencing token not above the one before it
)

// Violation is one piece of evidence that two holders overlapped or that the
// witness files lost a write.
type Violation struct {
	Line int    `json:"line"` // line of the log; 0 for the counter file
	Kind string `json:"kind"`
	Text string `json:"text"`
}

// MaxViolations is how many violations a Result keeps; the rest are counted.
const MaxViolations = 1000

// HostStats are the holds of one host label.
type HostStats struct {
	Host       string      `json:"host"`
	Entered    int         `json:"entered"`
	Completed  int         `json:"completed"`
	Killed     int         `json:"killed"`
	Unfinished int         `json:"unfinished"`
	Wait       Percentiles `json:"wait_ns"`

	wait Latencies
}

// Result is what the check of a log found.
type Result struct {
	Lines      int `json:"lines"`
	Entered    int `json:"entered"`   // holds begun
	Completed  int `json:"completed"` // holds that exited
	Killed     int `json:"killed"`    // holds ended by SIGKILL
	Unfinished int `json:"unfinished"`
	// Takeovers are holds that began while a worker killed later was
	// inside: fine, as long as it was dead by then (see Checker).
	Takeovers int `json:"takeovers"`
	// Pending are holds that began while a holder was inside whose run
	// has not logged its end: a kill of it may yet be logged (the run is
	// still going on), or never (the run was killed itself).
	Pending int          `json:"pending"`
	Hosts   []*HostStats `json:"hosts"`
	Wait    Percentiles  `json:"wait_ns"`
	// Counter is the counter file's value, when CounterChecked.
	Counter        int64       `json:"counter"`
	CounterChecked bool        `json:"counter_checked"`
	Violations     []Violation `json:"violations"`
	ViolationCount int         `json:"violation_count"`
	Notes          []string    `json:"notes,omitempty"`

	wait Latencies
}

// hold is a hold the log shows begun and not yet ended.
type hold struct {
	ev   Event
	line int
	// by is the enter that began while this hold was inside, and its
	// line: a violation unless this holder turns out to have been killed
	// before it.
	by     *Event
	byLine int
}

// Checker replays a log line by line. Log order is the global order: every
// append happens under the lock, so, when the lock works, each hold's lines
// follow the previous hold's and one hold is inside at a time. The rules:
//
//  1. Every line is one whole event; anything else is a line torn or
//     clobbered by two appends at once.
//  2. Each writer numbers its lines 1, 2, 3…; a gap or a repeat is a line
//     lost to a concurrent append.
//  3. An enter while another hold H is inside is a violation unless H's
//     worker is reported killed later in the log (a kill is logged once the
//     death is confirmed, under the lock, so usually after the next enter).
//     Even then, when the enter and the kill were stamped on the same clock
//     (same boot and time namespace) and the enter is earlier than the
//     moment SIGKILL was sent, H was alive when the other entered: a
//     violation. With a working lock that cannot happen: the enter is
//     stamped after Acquire returned, which was after the lock was freed,
//     which was after H died, which was after the signal was sent. Across
//     machines the clocks are not comparable, and such a takeover is
//     accepted unproven (run with --kill-rate 0 for a verdict across hosts
//     that rests on no kill at all). An H that exits or enters again after
//     the other's enter was alive: a violation. So is an H whose stress run
//     logged its end (a stop event: all its workers gone, all its kills
//     logged) without reporting it killed. An H whose run has not logged
//     its end by the end of the log is pending, not judged: the run may
//     still be going on (check again once every host has finished), or was
//     itself killed.
//  4. An exit ends the hold its writer is inside, with the same token. A
//     kill names a hold the log shows its victim inside. A hold of a run
//     still open at the run's stop lost a line. Nothing is written by a
//     worker after its death was confirmed, or by a run after its stop.
//  5. Each enter reads the value the last completed hold wrote, or, if the
//     last holder was killed inside (or lost its exit line), that value or
//     one more: it may have written before it died. Less is a lost
//     increment, more a write nobody logged. Each exit writes one more than
//     its enter read. At the end the counter file must hold what the log
//     says, and, counted from what the log's first enter read, at least one
//     increment per completed hold and at most one per hold begun.
//
// A Checker can be fed a log as it grows (Feed); Finish settles what is
// still open.
type Checker struct {
	res     Result
	hosts   map[string]*HostStats
	seqs    map[string]int64 // writer → last seq
	dead    map[string]int   // worker → line of its killed event
	ended   map[string]int   // run → line of its stop event
	open    map[string]*hold // worker → its hold the log shows begun
	current *hold            // the hold inside, if any
	// The counter may hold lo..hi now, as line setBy left it; unknown
	// after a worker found it unreadable, until the next enter reads it.
	lo, hi  int64
	setBy   int
	unknown bool
	base    int64 // what the first enter read
	// abandoned counts holds whose exit line is lost: they may or may
	// not have written the counter.
	abandoned int
	started   bool
	corrupt   bool // the counter was unreadable at some point: no tally
	// The highest fencing token an enter carried, and its line.
	fence     int64
	fenceLine int
}

// NewChecker returns a checker for a log whose first line comes next.
func NewChecker() *Checker {
	return &Checker{hosts: map[string]*HostStats{}, seqs: map[string]int64{}, dead: map[string]int{}, ended: map[string]int{}, open: map[string]*hold{}}
}

func (c *Checker) violate(line int, kind, format string, a ...any) {
	c.res.ViolationCount++
	if len(c.res.Violations) < MaxViolations {
		c.res.Violations = append(c.res.Violations, Violation{Line: line, Kind: kind, Text: fmt.Sprintf(format, a...)})
	}
}

// Violations returns the number of violations found so far. Overlaps that
// a later kill may still excuse are not counted until Finish.
func (c *Checker) Violations() int { return c.res.ViolationCount }

func (c *Checker) host(name string) *HostStats {
	h := c.hosts[name]
	if h == nil {
		h = &HostStats{Host: name}
		c.hosts[name] = h
	}
	return h
}

// who names the writer of e for messages.
func who(e *Event) string {
	return fmt.Sprintf("PID %d on host %s", e.PID, e.Host)
}

// quote shows a bad line, shortened.
func quote(b []byte) string {
	if len(b) > 100 {
		return fmt.Sprintf("%q…", b[:100])
	}
	return fmt.Sprintf("%q", b)
}

// Feed checks the next line of the log, without its newline.
func (c *Checker) Feed(line []byte) {
	c.res.Lines++
	n := c.res.Lines
	var e Event
	if err := json.Unmarshal(line, &e); err != nil || e.W == "" || e.Seq < 1 ||
		(e.Ev != EvEnter && e.Ev != EvExit && e.Ev != EvKilled && e.Ev != EvStop) {
		c.violate(n, KindTorn, "not one whole event, so two appends ran at once and tore or overwrote each other: %s", quote(line))
		return
	}
	switch last := c.seqs[e.W]; {
	case e.Seq > last+1 && last == 0:
		c.violate(n, KindLost, "the first line of %s has seq %d: its lines 1 to %d are missing (lost to a concurrent append?)", who(&e), e.Seq, e.Seq-1)
	case e.Seq > last+1:
		c.violate(n, KindLost, "%s: seq %d follows %d, so %d line(s) of it are missing (lost to a concurrent append)", who(&e), e.Seq, last, e.Seq-last-1)
	case e.Seq <= last:
		c.violate(n, KindLost, "%s: seq %d repeats or goes back (last was %d): a line appears twice or out of order", who(&e), e.Seq, last)
	}
	c.seqs[e.W] = max(c.seqs[e.W], e.Seq)
	if at, ok := c.dead[e.W]; ok {
		c.violate(n, KindOrder, "%s wrote after line %d confirmed its death: the log is out of order", who(&e), at)
	}
	if at, ok := c.ended[e.Run]; ok {
		c.violate(n, KindOrder, "%s wrote after its stress run ended at line %d: the log is out of order", who(&e), at)
	}
	switch e.Ev {
	case EvEnter:
		c.enter(n, &e)
	case EvExit:
		c.exit(n, &e)
	case EvKilled:
		c.killed(n, &e)
	case EvStop:
		c.stop(n, &e)
	}
}

func (c *Checker) enter(n int, e *Event) {
	hs := c.host(e.Host)
	hs.Entered++
	c.res.Entered++
	if e.WaitNS > 0 {
		hs.wait.Add(time.Duration(e.WaitNS))
		c.res.wait.Add(time.Duration(e.WaitNS))
	}
	if e.Fence > 0 {
		if e.Fence <= c.fence {
			c.violate(n, KindFence, "%s began a hold with fencing token %d, not above %d of line %d: a storage that checks tokens would refuse its writes, and the lease did not order the holders",
				who(e), e.Fence, c.fence, c.fenceLine)
		}
		c.fence, c.fenceLine = max(c.fence, e.Fence), n
	}
	lo, hi := c.lo, c.hi
	if h := c.open[e.W]; h != nil {
		c.violate(n, KindLost, "%s entered again without an exit for its hold of line %d: that exit line is missing", who(e), h.line)
		if h.by != nil {
			c.violate(h.byLine, KindOverlap, "two holders: %s entered while %s (entered at line %d) was inside, and that one was alive: it entered again at line %d",
				who(h.by), who(&h.ev), h.line, n)
		}
		if h == c.current {
			hi++ // it may have written before its exit line was lost
		}
		c.close(h)
		c.abandoned++
	}
	if h := c.current; h != nil {
		// Settled by a kill of h, or by Finish.
		h.by, h.byLine = e, n
		c.current = nil
		hi++ // h may have written its increment before it died
	}
	switch {
	case e.Counter < 0:
		c.violate(n, KindCounter, "%s could not read the counter: %s", who(e), e.Err)
		c.unknown, c.corrupt = true, true
	case c.unknown:
	case !c.started && e.Counter != lo:
		c.violate(n, KindCounter, "the first hold of the log read the counter as %d, not %d: the counter file is older than the log (delete both witness files to start afresh, never one alone)", e.Counter, lo)
	case e.Counter < lo:
		c.violate(n, KindCounter, "lost increment: %s read the counter as %d, but line %d left it at %d", who(e), e.Counter, c.setBy, lo)
	case e.Counter > hi:
		c.violate(n, KindCounter, "unexplained write: %s read the counter as %d, but line %d left it at %d and no hold since wrote it", who(e), e.Counter, c.setBy, hi)
	}
	if !c.started && e.Counter >= 0 {
		c.started, c.base = true, e.Counter
	}
	h := &hold{ev: *e, line: n}
	c.open[e.W], c.current = h, h
	if e.Counter >= 0 {
		c.lo, c.hi, c.setBy, c.unknown = e.Counter, e.Counter, n, false
	}
}

func (c *Checker) close(h *hold) {
	delete(c.open, h.ev.W)
	if c.current == h {
		c.current = nil
	}
}

func (c *Checker) exit(n int, e *Event) {
	h := c.open[e.W]
	switch {
	case h == nil:
		c.violate(n, KindExit, "%s exited from hold %s, which the log never shows it entering: its enter line is missing", who(e), e.Token)
		return
	case h.ev.Token != e.Token:
		c.violate(n, KindExit, "%s exited from hold %s, but the hold it entered at line %d is %s", who(e), e.Token, h.line, h.ev.Token)
		return
	}
	c.close(h)
	c.res.Completed++
	c.host(h.ev.Host).Completed++
	if h.by != nil {
		c.violate(h.byLine, KindOverlap, "two holders: %s entered while %s (entered at line %d) was inside, and that one was alive: it exited at line %d",
			who(h.by), who(&h.ev), h.line, n)
		return
	}
	if h.ev.Counter >= 0 && e.Counter != h.ev.Counter+1 {
		c.violate(n, KindCounter, "%s read the counter as %d at line %d but wrote %d", who(e), h.ev.Counter, h.line, e.Counter)
	}
	if e.Counter >= 0 {
		c.lo, c.hi, c.setBy = e.Counter, e.Counter, n
	}
}

func (c *Checker) killed(n int, e *Event) {
	victim := fmt.Sprintf("PID %d on host %s", e.VictimPID, e.Host)
	if at, ok := c.dead[e.Victim]; ok {
		c.violate(n, KindKill, "%s is reported killed again (first at line %d)", victim, at)
		return
	}
	c.dead[e.Victim] = n
	h := c.open[e.Victim]
	if h == nil || h.ev.Token != e.Token {
		c.violate(n, KindKill, "%s was killed inside hold %s, but the log does not show it inside that hold: its enter line is missing", victim, e.Token)
		return
	}
	c.close(h)
	c.res.Killed++
	c.host(h.ev.Host).Killed++
	if b := h.by; b != nil {
		if b.Boot == e.Boot && b.TimeN == e.TimeN && b.Mono < e.SignalMono {
			c.violate(h.byLine, KindOverlap, "two holders: %s entered while %s (entered at line %d) was inside, and that one was alive: SIGKILL was sent to it %v later (line %d)",
				who(b), victim, h.line, time.Duration(e.SignalMono-b.Mono), n)
		} else {
			c.res.Takeovers++
		}
		return
	}
	if h.ev.Counter >= 0 {
		c.lo, c.hi, c.setBy = h.ev.Counter, h.ev.Counter+1, n
	}
}

// stop ends a run: every worker of it has exited or been killed, and its
// kills are logged, so a hold of it still open lost its last line.
func (c *Checker) stop(n int, e *Event) {
	c.ended[e.Run] = n
	var open []*hold
	for _, h := range c.open {
		if h.ev.Run == e.Run {
			open = append(open, h)
		}
	}
	slices.SortFunc(open, func(a, b *hold) int { return a.line - b.line })
	for _, h := range open {
		if h.by != nil {
			c.violate(h.byLine, KindOverlap, "two holders: %s entered while %s (entered at line %d) was inside, and that one was alive: its run ended at line %d without reporting it killed",
				who(h.by), who(&h.ev), h.line, n)
		} else {
			c.violate(n, KindLost, "%s entered at line %d and neither exited nor was killed before its run ended here: a line is missing", who(&h.ev), h.line)
		}
		if h == c.current {
			c.hi++ // it may have written before its exit line was lost
		}
		c.close(h)
		c.abandoned++
	}
}

// Finish settles the holds still open at the end of the log and compares
// the counter file's value with the log. counterErr is why the counter could
// not be read; with checkCounter false (other hosts were still running
// while the files were read) the counter is not compared.
func (c *Checker) Finish(counter int64, counterErr error, checkCounter bool) *Result {
	r := &c.res
	var overlaps []*hold
	for _, h := range c.open {
		if h.by != nil {
			overlaps = append(overlaps, h)
		}
	}
	slices.SortFunc(overlaps, func(a, b *hold) int { return a.byLine - b.byLine })
	// A pending hold may have written its increment before it was killed,
	// as any hold killed inside may: the counter bounds allow for it.
	pending := 0
	for _, h := range overlaps {
		if h.ev.Run == "" {
			c.violate(h.byLine, KindOverlap, "two holders: %s entered while %s (entered at line %d) was inside, and that one was never reported killed: it was alive",
				who(h.by), who(&h.ev), h.line)
			continue
		}
		r.Pending++
		pending++
		r.Notes = append(r.Notes, fmt.Sprintf("line %d: %s entered while %s (entered at line %d) was inside, whose stress run has not logged its end: "+
			"its kill may not be logged yet (run still going on) or ever (run killed); not judged", h.byLine, who(h.by), who(&h.ev), h.line))
	}
	hi := c.hi + int64(pending)
	if h := c.current; h != nil {
		r.Unfinished++
		c.host(h.ev.Host).Unfinished++
		r.Notes = append(r.Notes, fmt.Sprintf("line %d: %s entered and has not exited: it is still running, or its stress run was killed", h.line, who(&h.ev)))
		hi++
	}
	switch {
	case !checkCounter:
		r.Notes = append(r.Notes, "the witness files changed while they were read (stress still running on another host?): the counter file was not compared with the log; run dirlockd stress --verify once every host has finished")
	case counterErr != nil:
		c.violate(0, KindCounter, "%v", counterErr)
	default:
		r.Counter, r.CounterChecked = counter, true
		switch {
		case c.unknown:
		case counter < c.lo:
			c.violate(0, KindCounter, "the counter file holds %d, but the log's last hold (line %d) left it at %d: a write was lost", counter, c.setBy, c.lo)
		case counter > hi:
			c.violate(0, KindCounter, "the counter file holds %d, but the log's last hold (line %d) left it at %d: a write nobody logged", counter, c.setBy, hi)
		}
		if !c.corrupt && c.started {
			inc := counter - c.base
			if inc < int64(r.Completed) || inc > int64(r.Completed+r.Killed+r.Unfinished+c.abandoned+pending) {
				c.violate(0, KindCounter, "the counter went from %d to %d (+%d), but %d holds completed, %d were killed inside and %d are unfinished: each completed hold adds exactly one, so increments were lost or doubled",
					c.base, counter, inc, r.Completed, r.Killed, r.Unfinished)
			}
		}
	}
	r.Hosts = r.Hosts[:0]
	for _, name := range slices.Sorted(maps.Keys(c.hosts)) {
		h := c.hosts[name]
		h.Wait = h.wait.Percentiles()
		r.Hosts = append(r.Hosts, h)
	}
	r.Wait = r.wait.Percentiles()
	if r.Violations == nil {
		r.Violations = []Violation{}
	}
	return r
}

// WaitLatencies returns the acquisition waits the log's enter events carry.
func (r *Result) WaitLatencies() *Latencies { return &r.wait }

// Check replays the log of the data directory dir, of every host that ran
// against it, and compares the counter file with it.
func Check(dir string) (*Result, error) {
	logPath, counterPath := filepath.Join(dir, LogName), filepath.Join(dir, CounterName)
	// The counter before and after the log: when other hosts still run,
	// the two reads differ, and a log read in between cannot be compared
	// with either. When they agree, the log is consistent with the value
	// (an enter or exit whose counter write happened in between is not).
	v1, err1 := readCounterFile(counterPath)
	data, err := os.ReadFile(logPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	missing := err != nil
	st, err := os.Stat(logPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	v2, err2 := readCounterFile(counterPath)
	stable := v1 == v2 && fmt.Sprint(err1) == fmt.Sprint(err2) && (st == nil || st.Size() == int64(len(data)))

	c := NewChecker()
	for len(data) > 0 {
		line, rest, found := bytes.Cut(data, []byte("\n"))
		data = rest
		if !found && !stable {
			// Being appended by a host that still runs.
			break
		}
		if !found {
			c.res.Lines++
			c.violate(c.res.Lines, KindTorn, "the last line has no newline: an append was cut short: %s", quote(line))
			break
		}
		c.Feed(line)
	}
	r := c.Finish(v2, err2, stable)
	if missing {
		r.Notes = append(r.Notes, "no "+logPath+": nothing has run against this directory")
	}
	return r, nil
}

func readCounterFile(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return parseCounter(b, path)
}

// Tail feeds a Checker with a log as it grows, for a progress line.
type Tail struct {
	path    string
	off     int64
	partial []byte
	c       *Checker
}

// NewTail follows the log of dir from its beginning.
func NewTail(dir string) *Tail {
	return &Tail{path: filepath.Join(dir, LogName), c: NewChecker()}
}

// Poll checks the lines appended since the last call and returns the number
// of violations so far.
func (t *Tail) Poll() (int, error) {
	f, err := os.Open(t.path)
	if err != nil {
		return t.c.Violations(), err
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, t.off, 1<<62))
	t.off += int64(len(b))
	b = append(t.partial, b...)
	for {
		line, rest, found := bytes.Cut(b, []byte("\n"))
		if !found {
			break
		}
		t.c.Feed(line)
		b = rest
	}
	t.partial = bytes.Clone(b)
	return t.c.Violations(), err
}

// String is the violation as a report line.
func (v Violation) String() string {
	if v.Line == 0 {
		return "counter file: " + v.Text
	}
	return fmt.Sprintf("line %d: %s", v.Line, strings.TrimSpace(v.Text))
}
