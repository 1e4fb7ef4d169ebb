package lease

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestTokenFile: the token file takes equal and higher tokens, refuses a
// lower one with the token that ran, and refuses a file it cannot read.
func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	name := TokenFileName("dirlockd.pid")
	if name != "dirlockd.fence" {
		t.Fatalf("TokenFileName = %q", name)
	}
	for _, tok := range []int64{5, 5, 7} {
		if err := AdvanceTokenFile(dir, name, tok, "/k"); err != nil {
			t.Fatalf("AdvanceTokenFile(%d): %v", tok, err)
		}
	}
	err := AdvanceTokenFile(dir, name, 6, "/k2")
	var tb *TokenBackError
	if !errors.As(err, &tb) || tb.Seen != 7 || tb.Token != 6 || tb.SeenKey != "/k" || tb.Path != filepath.Join(dir, name) {
		t.Fatalf("AdvanceTokenFile(6) after 7 = %v; want a TokenBackError naming 7 and /k", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || string(b) != "fencing_token=7\nlease_key=/k\n" {
		t.Fatalf("the file holds %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte("junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := AdvanceTokenFile(dir, name, 8, "/k"); err == nil || errors.As(err, &tb) {
		t.Fatalf("AdvanceTokenFile over junk = %v; want a plain error", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
