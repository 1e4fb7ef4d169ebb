package stress

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/pidfile"
)

func TestAppend(t *testing.T) {
	dir := t.TempDir()
	w, err := newWriter(dir, "abc", "run1", "host-x")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := w.Append(Event{Ev: EvEnter, Token: "t", Counter: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, LogName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("log:\n%s", b)
	}
	for i, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if e.Seq != int64(i+1) || e.W != "abc" || e.Run != "run1" || e.Host != "host-x" || e.PID != os.Getpid() || e.Boot == "" || e.Mono == 0 || e.Counter != int64(i) {
			t.Errorf("line %d: %+v", i+1, e)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Wall); err != nil {
			t.Errorf("line %d: wall %q: %v", i+1, e.Wall, err)
		}
	}
}

func TestCounter(t *testing.T) {
	dir := t.TempDir()
	f, err := openCounter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, err := readCounter(f); v != 0 || err != nil {
		t.Errorf("new counter: %d, %v", v, err)
	}
	for _, v := range []int64{1, 12345, 7} {
		if err := writeCounter(f, v, true); err != nil {
			t.Fatal(err)
		}
		if got, err := readCounter(f); got != v || err != nil {
			t.Errorf("wrote %d, read %d, %v", v, got, err)
		}
		if st, _ := f.Stat(); st.Size() != counterWidth {
			t.Errorf("counter file is %d bytes, want %d", st.Size(), counterWidth)
		}
	}
	if err := os.WriteFile(f.Name(), []byte("12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCounter(f); !errors.Is(err, errCounter) {
		t.Errorf("short counter: %v, want errCounter", err)
	}
}

func TestPrepareKeepsContent(t *testing.T) {
	dir := t.TempDir()
	if err := prepare(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, LogName), []byte("x\n"), 0o600)
	if err := prepare(dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, LogName)); string(b) != "x\n" {
		t.Errorf("prepare changed the log to %q", b)
	}
	for _, n := range []string{LogName, CounterName} {
		if st, err := os.Stat(filepath.Join(dir, n)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", n, st.Mode(), err)
		}
	}
}

func TestLatencies(t *testing.T) {
	var l Latencies
	if l.Quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
	for i := 1; i <= 1000; i++ {
		l.Add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := l.Quantile(c.q)
		if got < c.want || got > c.want*101/100 {
			t.Errorf("q%v = %v, want %v within 1%%", c.q, got, c.want)
		}
	}
	if p := l.Percentiles(); p.Max != time.Millisecond {
		t.Errorf("max %v", p.Max)
	}
	var m Latencies
	m.Add(time.Second)
	m.Merge(&l)
	if m.Count() != 1001 || m.Percentiles().Max != time.Second {
		t.Errorf("merged: %d samples, max %v", m.Count(), m.Percentiles().Max)
	}
}

// TestWitnessFilesNotOursRefused: a witness file that is a symbolic or hard
// link to a file elsewhere is refused by every path that writes it, and the
// other file is left as it was.
func TestWitnessFilesNotOursRefused(t *testing.T) {
	links := map[string]func(oldname, newname string) error{"symlink": os.Symlink, "hard link": os.Link}
	for _, name := range []string{LogName, CounterName} {
		for kind, link := range links {
			t.Run(name+" "+kind, func(t *testing.T) {
				dir := t.TempDir()
				outside := filepath.Join(t.TempDir(), "outside")
				if err := os.WriteFile(outside, []byte("keep\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := link(outside, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				if err := prepare(dir); !errors.Is(err, pidfile.ErrInvalid) {
					t.Errorf("prepare: %v, want invalid", err)
				}
				if name == LogName {
					w, err := newWriter(dir, "abc", "run1", "host-x")
					if err != nil {
						t.Fatal(err)
					}
					if err := w.Append(Event{Ev: EvEnter}); !errors.Is(err, pidfile.ErrInvalid) {
						t.Errorf("Append: %v, want invalid", err)
					}
				} else if f, err := openCounter(dir); !errors.Is(err, pidfile.ErrInvalid) {
					if f != nil {
						f.Close()
					}
					t.Errorf("openCounter: %v, want invalid", err)
				}
				if b, _ := os.ReadFile(outside); string(b) != "keep\n" {
					t.Errorf("the file outside changed to %q", b)
				}
			})
		}
	}
}
