package pidfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestReadOutcomes(t *testing.T) {
	t.Run("NotExist", func(t *testing.T) {
		dir := testutil.DataDir(t)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotExist || r.Record != nil || r.Raw != nil || r.Path != pidPath(dir) {
			t.Fatalf("Read: %+v, want NotExist at %s", r, pidPath(dir))
		}
		if _, err := os.Lstat(pidPath(dir)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Read created the pidfile: %v", err)
		}
	})

	t.Run("NotHeld with record", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{})
		rec := testRecord(os.Getpid(), "tok-stale")
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		dev, ino := f.ID()
		f.Close()
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || len(r.Holders) != 0 || r.Err != nil {
			t.Fatalf("Read: %v holders %v err %v, want NotHeld", r.Outcome, r.Holders, r.Err)
		}
		if !sameRecord(r.Record, rec) || !bytes.Equal(r.Raw, rec.Marshal()) {
			t.Fatalf("Read record %+v raw %q, want the one written", r.Record, r.Raw)
		}
		if r.Dev != dev || r.Ino != ino {
			t.Fatalf("Read Dev/Ino %d/%d, want %d/%d", r.Dev, r.Ino, dev, ino)
		}
	})

	t.Run("NotHeld empty", func(t *testing.T) {
		dir := testutil.DataDir(t)
		claim(t, dir, Options{}).Close()
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || r.Record != nil || len(r.Raw) != 0 || r.Err != nil {
			t.Fatalf("Read of an empty pidfile: %+v", r)
		}
	})

	t.Run("NotHeld malformed", func(t *testing.T) {
		dir := testutil.DataDir(t)
		content := "4242\nthis is not a record\n"
		writeFile(t, pidPath(dir), content, 0o600)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != NotHeld || r.Record != nil {
			t.Fatalf("Read: %v record %+v, want NotHeld without a record", r.Outcome, r.Record)
		}
		if !errors.Is(r.Err, ErrMalformed) || !strings.Contains(r.Err.Error(), "no crc32c line") ||
			!strings.HasPrefix(r.Err.Error(), pidPath(dir)+": ") {
			t.Fatalf("Read Err = %v, want the path and ErrMalformed (no crc32c line)", r.Err)
		}
		if string(r.Raw) != content {
			t.Fatalf("Read Raw = %q, want %q", r.Raw, content)
		}
		if b, _ := os.ReadFile(pidPath(dir)); string(b) != content {
			t.Fatalf("Read changed the pidfile to %q", b)
		}
	})

	t.Run("Held by us", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{Method: Flock})
		rec := testRecord(os.Getpid(), "tok-held")
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		fds := openFDs(t)
		r, err := Read(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != Held || !slices.Equal(r.Holders, []int{os.Getpid()}) {
			t.Fatalf("Read: %v holders %v, want held by [%d]", r.Outcome, r.Holders, os.Getpid())
		}
		if !sameRecord(r.Record, rec) {
			t.Fatalf("Read record %+v, want %+v", r.Record, rec)
		}
		// Read only looked, through the holder's descriptor: the lock is
		// still ours, and no descriptor of the file was opened.
		_, err = Claim(dir, Options{})
		wantHere(t, err, pidPath(dir))
		if err := f.CheckLock(); err != nil {
			t.Fatal(err)
		}
		if after := openFDs(t); after != fds {
			t.Fatalf("%d descriptors open after Read and Claim, %d before", after, fds)
		}
	})
}

// TestConcurrentReaderNeverAcceptsTornRecord rewrites the record as fast as
// it can, alternating short and long ones, while reading it through another
// descriptor.
func TestConcurrentReaderNeverAcceptsTornRecord(t *testing.T) {
	dir := testutil.DataDir(t)
	w := claim(t, dir, Options{NoSync: true})
	written := map[string][]byte{} // token -> marshalled record
	padLen := map[string]int{}     // token -> length of its Extra["pad"]
	var recs []*Record
	for i := range 8 {
		n := 50
		if i%2 == 1 {
			n = 2000
		}
		tok := fmt.Sprintf("tok-%d-%d", i, n)
		r := testRecord(os.Getpid(), tok)
		r.Extra = map[string]string{"pad": strings.Repeat(string(rune('a'+i)), n)}
		recs = append(recs, r)
		written[tok], padLen[tok] = r.Marshal(), n
	}
	if err := w.Write(recs[0]); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	done := make(chan error, 1)
	var writes atomic.Int64
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := w.Write(recs[i%len(recs)]); err != nil {
				done <- err
				return
			}
			writes.Add(1)
		}
	}()
	var once sync.Once
	halt := func() error {
		var err error
		once.Do(func() { close(stop); err = <-done })
		return err
	}
	t.Cleanup(func() { halt() })

	rf, err := os.Open(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()

	check := func(how string, r *Record, b []byte) {
		t.Helper()
		// The record accepted must be exactly one that was written; bytes
		// after its checksum line are a longer record's tail not yet
		// truncated, which Parse ignores by design.
		n, ok := padLen[r.Token]
		if !ok || len(r.Extra["pad"]) != n || !bytes.HasPrefix(b, written[r.Token]) {
			halt()
			t.Fatalf("%s accepted a record that was never written: token %q pad %d bytes:\n%q", how, r.Token, len(r.Extra["pad"]), b)
		}
	}
	var calls, accepted, refused, raws, torn int
	seen := map[int]int{} // pad length -> records accepted
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		calls++
		r, b, err := readRecord(rf, w.Path())
		switch {
		case err != nil:
			// Only when two reads 1 ms apart saw the same torn content.
			if !errors.Is(err, ErrMalformed) {
				halt()
				t.Fatalf("readRecord: %v", err)
			}
			if refused++; refused == 1 {
				t.Logf("first refusal: %v (%d bytes)", err, len(b))
			}
		case r == nil:
			halt()
			t.Fatalf("readRecord found an empty pidfile (raw %q)", b)
		default:
			check("readRecord", r, b)
			accepted++
			seen[len(r.Extra["pad"])]++
		}

		raws++
		b, err = readAll(rf)
		if err != nil {
			halt()
			t.Fatal(err)
		}
		if r, err := Parse(b); err != nil {
			torn++
		} else {
			check("Parse", r, b)
		}
	}
	if err := halt(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("%d writes; readRecord: %d calls, %d accepted (%v by pad length), %d refused; raw reads: %d, %d malformed (torn)",
		writes.Load(), calls, accepted, seen, refused, raws, torn)
	if calls < 2000 || writes.Load() < 2000 {
		t.Fatalf("only %d reads and %d writes: the race was not exercised", calls, writes.Load())
	}
	if seen[50] < 100 || seen[2000] < 100 {
		t.Fatalf("accepted records by pad length %v: want many of both short and long ones", seen)
	}
	// A refusal needs the writer stalled mid-write across two reads 1 ms
	// apart; without that retry every torn read would be refused.
	if refused > 10 && refused*2 > torn {
		t.Fatalf("readRecord refused %d reads while %d raw reads were torn: it does not retry past a writer", refused, torn)
	}
}
