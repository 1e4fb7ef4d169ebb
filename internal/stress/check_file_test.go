package stress

// The checker on what the files themselves show: torn and missing lines,
// the counter file, unmatched and unfinished holds, the cap, and Tail.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckTornLine(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1)
	good := s.lines[0]
	// Half a line, then the next append's start: another append cut it.
	r := s.raw(good[:len(good)/2]+good[:20]).enter("w2", "t2", 1).exit("w2", "t2", 2).check(2)
	wantKinds(t, r, KindTorn)
	if r.Violations[0].Line != 3 {
		t.Errorf("got %s", r.Violations[0])
	}
	r = newScript(t).raw("\x00\x00\x00").check(-1)
	wantKinds(t, r, KindTorn)
}

func TestCheckUnterminatedLastLine(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1)
	dir := t.TempDir()
	log := strings.Join(s.lines, "\n") + "\n" + `{"ev":"enter","w":"w2"`
	if err := os.WriteFile(filepath.Join(dir, LogName), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := openCounter(dir)
	writeCounter(f, 1, true)
	f.Close()
	r, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds(t, r, KindTorn)
}

func TestCheckSeqGap(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0)
	s.seqs["w1"]++ // line 2 of w1 is lost (its exit)
	r := s.enter("w1", "t2", 1).exit("w1", "t2", 2).check(2)
	// The lost exit shows twice: as a gap, and as an enter with no exit
	// before it.
	wantKinds(t, r, KindLost, KindLost)
	if v := r.Violations[0]; v.Line != 2 || !strings.Contains(v.Text, "seq 3 follows 1") {
		t.Errorf("got %s", v)
	}
	// A repeat.
	s = newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1)
	s.seqs["w1"] = 1
	r = s.enter("w1", "t2", 1).exit("w1", "t2", 2).check(2)
	wantKinds(t, r, KindLost)
}

func TestCheckCounterFileMismatch(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w2", "t2", 1).exit("w2", "t2", 2)
	r := s.check(5)
	wantKinds(t, r, KindCounter, KindCounter)
	if v := r.Violations[0]; v.Line != 0 || !strings.Contains(v.Text, "holds 5") {
		t.Errorf("got %s", v)
	}
	r = s.check(1)
	wantKinds(t, r, KindCounter, KindCounter)
	// A counter file that is not a number.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, LogName), []byte(strings.Join(s.lines, "\n")+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, CounterName), []byte("2\n"), 0o600)
	r, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds(t, r, KindCounter)
}

func TestCheckCounterOlderThanLog(t *testing.T) {
	r := newScript(t).enter("w1", "t1", 7).exit("w1", "t1", 8).check(8)
	wantKinds(t, r, KindCounter)
	if !strings.Contains(r.Violations[0].Text, "delete both") {
		t.Errorf("got %s", r.Violations[0])
	}
}

func TestCheckUnmatched(t *testing.T) {
	r := newScript(t).exit("w1", "t1", 1).check(0)
	wantKinds(t, r, KindExit)
	r = newScript(t).enter("w1", "t1", 0).exit("w1", "tX", 1).check(1)
	wantKinds(t, r, KindExit)
	r = newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).killed("p", "w1", "t1", 1).check(1)
	wantKinds(t, r, KindKill)
	s := newScript(t).enter("w1", "t1", 0)
	r = s.killed("p", "w1", "t1", s.mono).exit("w1", "t1", 1).check(1)
	wantKinds(t, r, KindOrder, KindExit)
}

func TestCheckUnfinished(t *testing.T) {
	// A hold still going on at the end is a note, not a violation; the
	// counter may already have its increment.
	for _, counter := range []int64{1, 2} {
		r := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w2", "t2", 1).check(counter)
		wantKinds(t, r)
		if r.Unfinished != 1 || len(r.Notes) != 1 {
			t.Errorf("result %+v", r)
		}
	}
	// Once its run has ended, the hold lost its exit line.
	r := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).enter("w2", "t2", 1).stop().check(2)
	wantKinds(t, r, KindLost)
	if v := r.Violations[0]; v.Line != 4 || !strings.Contains(v.Text, "before its run ended here") {
		t.Errorf("got %s", v)
	}
	// And its run writes nothing after its stop.
	r = newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1).stop().enter("w2", "t2", 1).exit("w2", "t2", 2).check(2)
	wantKinds(t, r, KindOrder, KindOrder)
}

func TestCheckCorruptCounterRead(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0).exit("w1", "t1", 1)
	s.ev(Event{Ev: EvEnter, W: "w2", PID: 9, Token: "t2", Counter: -1, Err: "counter file is corrupt"})
	s.ev(Event{Ev: EvExit, W: "w2", PID: 9, Token: "t2", Counter: -1})
	r := s.check(1)
	wantKinds(t, r, KindCounter)
}

func TestCheckCap(t *testing.T) {
	s := newScript(t)
	for range MaxViolations + 5 {
		s.raw("garbage")
	}
	r := s.check(-1)
	if len(r.Violations) != MaxViolations || r.ViolationCount != MaxViolations+5 {
		t.Errorf("%d violations kept, %d counted", len(r.Violations), r.ViolationCount)
	}
	var b strings.Builder
	NewReport("d", nil, r).WriteText(&b)
	if !strings.Contains(b.String(), "and 985 more") || strings.Count(b.String(), "\n  line ") != ShownViolations {
		t.Errorf("report:\n%s", b.String())
	}
}

// TestTail: fed a log in pieces, cut anywhere, the incremental check finds
// what Check finds.
func TestTail(t *testing.T) {
	s := newScript(t).enter("w1", "t1", 0).enter("w2", "t2", 0).exit("w1", "t1", 1).exit("w2", "t2", 1).raw("torn")
	log := strings.Join(s.lines, "\n") + "\n"
	dir := t.TempDir()
	path := filepath.Join(dir, LogName)
	tail := NewTail(dir)
	for i := 0; i < len(log); i += 37 {
		if err := os.WriteFile(path, []byte(log[:min(i+37, len(log))]), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := tail.Poll(); err != nil {
			t.Fatal(err)
		}
	}
	// The overlap is proven by w1's exit; the torn line counts too.
	if n, _ := tail.Poll(); n != 2 {
		t.Errorf("tail found %d violations, want 2", n)
	}
}
