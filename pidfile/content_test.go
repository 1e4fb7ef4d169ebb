package pidfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestWrite(t *testing.T) {
	t.Run("replaces the content exactly", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f := claim(t, dir, Options{})
		long := testRecord(os.Getpid(), "tok-long")
		long.Extra["pad"] = strings.Repeat("L", 3000)
		short := testRecord(os.Getpid(), "tok-short")
		short.Extra = nil
		for _, rec := range []*Record{long, short, long, short} {
			if err := f.Write(rec); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(pidPath(dir))
			if err != nil {
				t.Fatal(err)
			}
			if want := rec.Marshal(); !bytes.Equal(b, want) {
				t.Fatalf("after Write(%s) the pidfile holds %d bytes, want exactly the %d of Marshal:\n%q", rec.Token, len(b), len(want), b)
			}
			r, raw, err := f.ReadRecord()
			if err != nil || !sameRecord(r, rec) || !bytes.Equal(raw, b) {
				t.Fatalf("ReadRecord after Write(%s): %+v, %v", rec.Token, r, err)
			}
		}
	})

	t.Run("needs the lock", func(t *testing.T) {
		dir := testutil.DataDir(t)
		f, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rec := testRecord(os.Getpid(), "tok-nolock")
		wantRefused := func(when string) {
			t.Helper()
			err := f.Write(rec)
			if err == nil || !strings.Contains(err.Error(), "write "+pidPath(dir)+": lock not held") {
				t.Fatalf("Write %s: %v, want %q", when, err, "lock not held")
			}
		}
		wantRefused("after Open")
		if err := f.TryLock(Auto); err != nil {
			t.Fatal(err)
		}
		if err := f.Write(rec); err != nil {
			t.Fatal(err)
		}
		if err := f.Unlock(); err != nil {
			t.Fatal(err)
		}
		wantRefused("after Unlock")
		if b, _ := os.ReadFile(pidPath(dir)); !bytes.Equal(b, rec.Marshal()) {
			t.Fatalf("pidfile holds %q, want the one record written under the lock", b)
		}
	})
}

// TestWriteRefusesSharedInode: a link made to a held pidfile stops Write
// from writing through the descriptor, which would change the linked file.
func TestWriteRefusesSharedInode(t *testing.T) {
	dir := testutil.DataDir(t)
	f := claim(t, dir, Options{})
	if err := f.Write(testRecord(os.Getpid(), "tok-1")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Link(pidPath(dir), link); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(link)
	err := f.Write(testRecord(os.Getpid(), "tok-2"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "has 2 links") {
		t.Fatalf("Write with a second link: %v, want invalid, naming 2 links", err)
	}
	if after, _ := os.ReadFile(link); !bytes.Equal(before, after) {
		t.Fatalf("the linked file changed: %q -> %q", before, after)
	}
	os.Remove(link)
	if err := f.Write(testRecord(os.Getpid(), "tok-3")); err != nil {
		t.Fatalf("Write once the link is gone: %v", err)
	}
}
