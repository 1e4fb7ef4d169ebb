package stress

import (
	"testing"
)

// TestWitness: the lines of Witness holders and kills are judged as Work's
// and Run's: a hold after a confirmed kill is a takeover, a hold that
// overlaps one never reported killed is two holders.
func TestWitness(t *testing.T) {
	dir := t.TempDir()
	harness := newTestWitness(t, dir, "")
	a := newTestWitness(t, dir, "tok-a")
	h, err := a.Enter("tok-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Exit(); err != nil {
		t.Fatal(err)
	}
	b := newTestWitness(t, dir, "tok-b")
	if _, err := b.Enter("tok-b"); err != nil {
		t.Fatal(err)
	}
	sent := MonoNow()
	if err := harness.Killed(b.ID(), 4242, "tok-b", sent); err != nil {
		t.Fatal(err)
	}
	c := newTestWitness(t, dir, "tok-c")
	if h, err = c.Enter("tok-c"); err != nil {
		t.Fatal(err)
	}
	if err := h.Exit(); err != nil {
		t.Fatal(err)
	}
	r, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantKinds(t, r)
	if r.Entered != 3 || r.Completed != 2 || r.Killed != 1 || r.Counter != 2 || !r.CounterChecked {
		t.Errorf("check: entered %d, completed %d, killed %d, counter %d (checked %v); want 3, 2, 1, 2",
			r.Entered, r.Completed, r.Killed, r.Counter, r.CounterChecked)
	}

	// A fourth holder enters while a fifth is inside, and nobody reports
	// the fifth killed.
	d, e := newTestWitness(t, dir, "tok-d"), newTestWitness(t, dir, "tok-e")
	hd, err := d.Enter("tok-d")
	if err != nil {
		t.Fatal(err)
	}
	he, err := e.Enter("tok-e")
	if err != nil {
		t.Fatal(err)
	}
	if err := hd.Exit(); err != nil {
		t.Fatal(err)
	}
	if err := he.Exit(); err != nil {
		t.Fatal(err)
	}
	if r, err = Check(dir); err != nil {
		t.Fatal(err)
	}
	if r.ViolationCount == 0 || r.Violations[0].Kind != KindOverlap {
		t.Errorf("overlapping holds: violations %v, want %s first", r.Violations, KindOverlap)
	}
}

func newTestWitness(t *testing.T, dir, id string) *Witness {
	t.Helper()
	w, err := NewWitness(dir, id, "test")
	if err != nil {
		t.Fatal(err)
	}
	return w
}
