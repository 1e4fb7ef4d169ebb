package printable

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"/srv/data", "/srv/data"},
		{`C:\data`, `C:\data`},
		{"häst ✓", "häst ✓"},
		{"a\nb", `a\nb`},
		{"a\r\tb", `a\r\tb`},
		{"\x1b[31mred", `\x1b[31mred`},
		{"del\x7f", `del\x7f`},
		{"c1\u0085\u009b", `c1\u0085\u009b`},
		{"ls\u2028ps\u2029", `ls\u2028ps\u2029`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"bad\xffutf8\xc3", `bad\xffutf8\xc3`},
		{"\x00", `\x00`},
	} {
		if got := String(c.in); got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFprintf(t *testing.T) {
	var b bytes.Buffer
	Fprintf(&b, "%s: %v %d\n", "a\nb", errors.New("e\x1b"), 7)
	if got, want := b.String(), "a\\nb: e\\x1b 7\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzString: the result holds nothing that needs escaping, and is s
// itself when s holds nothing that does.
func FuzzString(f *testing.F) {
	f.Add("a\nb\x1b[2J\xff\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q: not UTF-8", s, got)
		}
		for _, r := range got {
			if needsEscape(r) {
				t.Fatalf("String(%q) = %q: %U left", s, got, r)
			}
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, needsEscape) && got != s {
			t.Fatalf("String(%q) = %q: changed a string with nothing to escape", s, got)
		}
	})
}
