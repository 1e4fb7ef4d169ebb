package stress

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// script writes a crafted log, line by line, as the writers would.
type script struct {
	t     *testing.T
	lines []string
	seqs  map[string]int64
	mono  int64
}

func newScript(t *testing.T) *script { return &script{t: t, seqs: map[string]int64{}, mono: 1e9} }

// ev appends e, filling in the writer's seq and a mono one millisecond
// after the previous line's (unless e has one).
func (s *script) ev(e Event) *script {
	s.seqs[e.W]++
	if e.Seq == 0 {
		e.Seq = s.seqs[e.W]
	}
	if e.Host == "" {
		e.Host = "a"
	}
	if e.Boot == "" {
		e.Boot = "boot-a"
	}
	if e.Run == "" {
		e.Run = "p"
	}
	s.mono += int64(time.Millisecond)
	if e.Mono == 0 {
		e.Mono = s.mono
	}
	b, err := json.Marshal(e)
	if err != nil {
		s.t.Fatal(err)
	}
	s.lines = append(s.lines, string(b))
	return s
}

func (s *script) enter(w, token string, counter int64) *script {
	return s.ev(Event{Ev: EvEnter, W: w, PID: pidOf(w), Token: token, Counter: counter, WaitNS: int64(time.Millisecond)})
}

func (s *script) exit(w, token string, counter int64) *script {
	return s.ev(Event{Ev: EvExit, W: w, PID: pidOf(w), Token: token, Counter: counter})
}

// killed logs, as stress parent p, that w died in hold token; the SIGKILL
// was sent at signal.
func (s *script) killed(p, w, token string, signal int64) *script {
	return s.ev(Event{Ev: EvKilled, W: p, PID: 1, Token: token, Victim: w, VictimPID: pidOf(w), SignalMono: signal})
}

// stop logs the end of run p.
func (s *script) stop() *script {
	return s.ev(Event{Ev: EvStop, W: "p", PID: 1})
}

func (s *script) raw(line string) *script {
	s.lines = append(s.lines, line)
	return s
}

func pidOf(w string) int { return 100 + int(w[0]) }

// check writes the log and a counter file holding counter (none if < 0)
// and checks them.
func (s *script) check(counter int64) *Result {
	s.t.Helper()
	dir := s.t.TempDir()
	log := strings.Join(s.lines, "\n")
	if len(s.lines) > 0 {
		log += "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, LogName), []byte(log), 0o600); err != nil {
		s.t.Fatal(err)
	}
	if counter >= 0 {
		f, err := openCounter(dir)
		if err != nil {
			s.t.Fatal(err)
		}
		if err := writeCounter(f, counter, true); err != nil {
			s.t.Fatal(err)
		}
		f.Close()
	}
	r, err := Check(dir)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// kinds lists the kinds of r's violations with the lines they name.
func kinds(r *Result) []string {
	var out []string
	for _, v := range r.Violations {
		out = append(out, v.Kind)
	}
	return out
}

func wantKinds(t *testing.T, r *Result, want ...string) {
	t.Helper()
	if got := kinds(r); !slices.Equal(got, want) {
		t.Errorf("violations %q, want %q", got, want)
		for _, v := range r.Violations {
			t.Logf("  %s", v)
		}
	}
	if r.ViolationCount != len(want) {
		t.Errorf("ViolationCount %d, want %d", r.ViolationCount, len(want))
	}
}

func TestCheckClean(t *testing.T) {
	r := newScript(t).
		enter("w1", "t1", 0).exit("w1", "t1", 1).
		enter("w2", "t2", 1).exit("w2", "t2", 2).
		enter("w1", "t3", 2).exit("w1", "t3", 3).
		stop().
		check(3)
	wantKinds(t, r)
	if r.Entered != 3 || r.Completed != 3 || r.Killed != 0 || r.Lines != 7 || !r.CounterChecked || r.Counter != 3 {
		t.Errorf("result %+v", r)
	}
	if len(r.Hosts) != 1 || r.Hosts[0].Host != "a" || r.Hosts[0].Entered != 3 {
		t.Errorf("hosts %+v", r.Hosts)
	}
	if r.Wait.P50 < time.Millisecond || r.Wait.P50 > time.Millisecond*101/100 {
		t.Errorf("wait p50 %v, want 1ms", r.Wait.P50)
	}
}

func TestCheckEmpty(t *testing.T) {
	r := newScript(t).check(-1)
	wantKinds(t, r)
	if rep := NewReport("d", nil, r); r.Entered != 0 || rep.Verdict != Inconclusive {
		t.Errorf("verdict %s, want %s; result %+v", rep.Verdict, Inconclusive, r)
	}
	// No witness files at all.
	r, err := Check(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wantKinds(t, r)
	if r.Entered != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "nothing has run") {
		t.Errorf("result %+v", r)
	}
}

func TestCheckOverlap(t *testing.T) {
	// Both read 0 and wrote 1: the second increment is lost as well.
	r := newScript(t).
		enter("w1", "t1", 0).
		enter("w2", "t2", 0).
		exit("w1", "t1", 1).
		exit("w2", "t2", 1).
		check(1)
	wantKinds(t, r, KindOverlap, KindCounter)
	if v := r.Violations[0]; v.Line != 2 || !strings.Contains(v.Text, "exited at line 3") {
		t.Errorf("overlap reported as %s", v)
	}
	if !strings.Contains(r.Violations[1].Text, "increments were lost") {
		t.Errorf("tally reported as %s", r.Violations[1])
	}
	if rep := NewReport("d", nil, r); rep.Verdict != Fail || !strings.HasPrefix(rep.Summary, "FAIL") {
		t.Errorf("report %+v", rep)
	}
}

func TestCheckCounterContinuity(t *testing.T) {
	for _, c := range []struct {
		read int64 // what the second hold read after the first wrote 1
		want string
	}{{0, "lost increment"}, {5, "unexplained write"}} {
		r := newScript(t).
			enter("w1", "t1", 0).exit("w1", "t1", 1).
			enter("w2", "t2", c.read).exit("w2", "t2", c.read+1).
			check(c.read + 1)
		// The final tally disagrees too.
		wantKinds(t, r, KindCounter, KindCounter)
		if v := r.Violations[0]; v.Line != 3 || !strings.Contains(v.Text, c.want) {
			t.Errorf("read %d: got %s, want %q", c.read, v, c.want)
		}
	}
}

func TestCheckKilledTakeover(t *testing.T) {
	for _, c := range []struct {
		name    string
		read    int64 // what the holder after the kill read
		counter int64
	}{
		{"killed before its write", 1, 2},
		{"killed after its write", 2, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w1", "t2", 1)
			signal := s.mono + int64(time.Microsecond) // sent after w1's enter, before w2's
			r := s.enter("w2", "t3", c.read).exit("w2", "t3", c.read+1).
				killed("p", "w1", "t2", signal).
				check(c.counter)
			wantKinds(t, r)
			if r.Killed != 1 || r.Takeovers != 1 || r.Completed != 2 {
				t.Errorf("result %+v", r)
			}
		})
	}
}

func TestCheckKilledInsideNobodyFollowed(t *testing.T) {
	// The kill is logged before anyone else entered (the parent took the
	// lock first); the counter may be one more than the victim read.
	for _, counter := range []int64{1, 2} {
		s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w1", "t2", 1)
		r := s.killed("p", "w1", "t2", s.mono+1).check(counter)
		wantKinds(t, r)
		if r.Killed != 1 || r.Takeovers != 0 {
			t.Errorf("result %+v", r)
		}
	}
	s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w1", "t2", 1)
	r := s.killed("p", "w1", "t2", s.mono+1).check(3)
	wantKinds(t, r, KindCounter, KindCounter)
}

func TestCheckKilledTooLate(t *testing.T) {
	// w2 entered before the SIGKILL to w1 was even sent, on the same
	// clock: w1 was alive, so two held at once.
	s := newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 0)
	r := s.killed("p", "w1", "t1", s.mono+int64(time.Millisecond)).exit("w2", "t2", 1).check(1)
	wantKinds(t, r, KindOverlap)
	if v := r.Violations[0]; v.Line != 2 || !strings.Contains(v.Text, "SIGKILL was sent to it 1ms later") {
		t.Errorf("got %s", v)
	}
}

func TestCheckKilledOtherClock(t *testing.T) {
	// The same timing across boots proves nothing: clocks of different
	// machines are not compared.
	s := newScript(t).enter("w1", "t1", 0)
	s.ev(Event{Ev: EvEnter, W: "w2", PID: 7, Host: "b", Boot: "boot-b", Token: "t2", Counter: 0})
	s.ev(Event{Ev: EvExit, W: "w2", PID: 7, Host: "b", Boot: "boot-b", Token: "t2", Counter: 1})
	r := s.killed("p", "w1", "t1", s.mono+int64(time.Millisecond)).check(1)
	wantKinds(t, r)
	if r.Takeovers != 1 || len(r.Hosts) != 2 {
		t.Errorf("result %+v", r)
	}
}

func TestCheckNeverKilled(t *testing.T) {
	// Its run ended without reporting it killed: it was alive.
	r := newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 0).exit("w2", "t2", 1).stop().check(1)
	wantKinds(t, r, KindOverlap)
	if v := r.Violations[0]; v.Line != 2 || !strings.Contains(v.Text, "its run ended at line 4 without reporting it killed") {
		t.Errorf("got %s", v)
	}
	if r.Pending != 0 {
		t.Errorf("%d pending", r.Pending)
	}
	// Its run goes on: the kill may still come.
	r = newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 0).exit("w2", "t2", 1).check(1)
	wantKinds(t, r)
	if r.Pending != 1 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "not judged") {
		t.Errorf("result %+v", r)
	}
	if rep := NewReport("d", nil, r); rep.Verdict != Pass || !strings.Contains(rep.Summary, "--verify") {
		t.Errorf("report %+v", rep)
	}
}

func TestCheckPendingWroteCounter(t *testing.T) {
	// A run's own check while another run goes on: w1 wrote its increment
	// (0 to 1) and was killed, its kill not logged yet; w2 took over,
	// read 1, wrote 2, and has not exited. The counter file's 2 is
	// explained by the pending hold, not an unexplained write.
	r := newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 1).check(2)
	wantKinds(t, r)
	if r.Pending != 1 || r.Unfinished != 1 {
		t.Errorf("result %+v", r)
	}
	// Once that run logs its end, the same increments are judged.
	r = newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 1).killed("p", "w1", "t1", 0).check(2)
	wantKinds(t, r)
}

func TestCheckFencingToken(t *testing.T) {
	fenced := func(s *script, w, token string, fence, counter int64) *script {
		return s.ev(Event{Ev: EvEnter, W: w, PID: pidOf(w), Token: token, Fence: fence, Counter: counter, WaitNS: int64(time.Millisecond)})
	}
	s := newScript(t)
	fenced(s, "w1", "t1", 5, 0).exit("w1", "t1", 1)
	fenced(s, "w2", "t2", 9, 1).exit("w2", "t2", 2)
	if r := s.check(2); r.ViolationCount != 0 {
		t.Fatalf("rising tokens: %+v", r.Violations)
	}
	s = newScript(t)
	fenced(s, "w1", "t1", 9, 0).exit("w1", "t1", 1)
	fenced(s, "w2", "t2", 5, 1).exit("w2", "t2", 2)
	r := s.check(2)
	wantKinds(t, r, KindFence)
	if v := r.Violations[0]; v.Line != 3 || !strings.Contains(v.Text, "not above 9 of line 1") {
		t.Errorf("reported as %s", v)
	}
}
