package manpage

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain words":         "plain words",
		"a *b* _c_ `d` [e] #": "a \\*b\\* \\_c\\_ \\`d\\` \\[e\\] \\#",
		"<x>|~\\":             "\\<x\\>\\|\\~\\\\",
		"- not a list":        "\\- not a list",
		"1. not a list":       "1\\. not a list",
		": not a definition":  "\\: not a definition",
		"x - y":               "x - y",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPage(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringP("dir", "d", "", "data `DIR`")
	fs.Duration("timeout", 0, "give up after this long")
	fs.String("mode", "fast", "fast or safe")
	cli.Detail(fs, "mode", "safe_mode syncs.")
	fs.Bool("quiet", false, "say less")
	fs.Bool("hidden", false, "not shown")
	fs.MarkHidden("hidden")

	p := New("prog-serve", 8, "prog", "System Manager's Manual", "serve *it*")
	p.Section("SYNOPSIS")
	p.Synopsis("prog", "serve [-d DIR]")
	p.Section("DESCRIPTION")
	p.Text("First line\nsecond line.\n  $ prog serve\n  $ prog stop\nAfter.\n\nNext paragraph.")
	p.Subsection("Flags_1")
	p.Flags(fs)
	p.Items([]Item{{"0", "success"}, {"ENV_VAR", "a *thing*"}})
	p.Code("  prog serve\n")
	p.SeeAlso("prog(1)", "flock(1)")
	want := "# PROG-SERVE 8 \"@DATE@\" \"prog\" \"System Manager's Manual\"\n\n# NAME\n\nprog-serve - serve \\*it\\*\n\n" +
		"# SYNOPSIS\n\n**prog** serve \\[-d DIR\\]\n\n" +
		"# DESCRIPTION\n\nFirst line second line.\n\n```\n  $ prog serve\n  $ prog stop\n```\n\nAfter.\n\nNext paragraph.\n\n" +
		"## Flags\\_1\n\n" +
		"**-d**, **--dir** *DIR*\n: data DIR\n\n" +
		"**--timeout** *duration*\n: give up after this long\n\n" +
		"**--mode** *string*\n: fast or safe (default fast). safe\\_mode syncs.\n\n" +
		"**--quiet**\n: say less\n\n" +
		"**0**\n: success\n\n**ENV\\_VAR**\n: a \\*thing\\*\n\n" +
		"```\n  prog serve\n```\n\n" +
		"**prog**(1), **flock**(1)\n"
	if got := p.String(); got != want {
		t.Errorf("page:\n%s\nwant:\n%s", got, want)
	}
}

// TestWrite: a page is rendered to roff and dated today; written again
// unchanged, it keeps its date (and its file is not rewritten); changed, it
// takes the new day's.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	page := func(desc string) string {
		p := New("prog", 1, "prog", "User Commands", "do things")
		p.Section("DESCRIPTION")
		p.Text(desc)
		return p.String()
	}
	day1 := time.Date(2026, 1, 3, 2, 0, 0, 0, time.FixedZone("east", 3600*5)) // 2026-01-02 in UTC
	if err := Write(dir, map[string]string{"prog.1": page("Does things.")}, day1); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prog.1")
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(first, []byte(`.TH PROG 1 "2026-01-02" "prog" "User Commands"`)) || !bytes.Contains(first, []byte("Does things.")) {
		t.Fatalf("rendered page lacks its title line (dated in UTC) or its text:\n%s", first)
	}
	if got := titleDate(first); got != "2026-01-02" {
		t.Errorf("titleDate = %q, want 2026-01-02", got)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	day2 := day1.AddDate(0, 1, 0)
	if err := Write(dir, map[string]string{"prog.1": page("Does things.")}, day2); err != nil {
		t.Fatal(err)
	}
	same, _ := os.ReadFile(path)
	if fi, err := os.Stat(path); err != nil || !bytes.Equal(same, first) || !fi.ModTime().Equal(old) {
		t.Errorf("an unchanged page was rewritten (modified %v, err %v) or changed:\n%s", fi.ModTime(), err, same)
	}
	if err := Write(dir, map[string]string{"prog.1": page("Does other things.")}, day2); err != nil {
		t.Fatal(err)
	}
	changed, _ := os.ReadFile(path)
	if titleDate(changed) != "2026-02-02" || !bytes.Contains(changed, []byte("Does other things.")) {
		t.Errorf("a changed page: date %q, want 2026-02-02, and its new text:\n%s", titleDate(changed), changed)
	}
	if err := Write(filepath.Join(dir, "nosuch"), map[string]string{"prog.1": page("x")}, day2); err == nil {
		t.Error("Write into a missing directory: no error")
	}
	if got := titleDate([]byte("no title line\n")); got != "" {
		t.Errorf("titleDate of a page without .TH = %q", got)
	}
	if !strings.HasPrefix(DatePlaceholder, "@") {
		t.Errorf("DatePlaceholder %q could be mistaken for text", DatePlaceholder)
	}
}
