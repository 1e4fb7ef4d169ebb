package cli

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// testFlags is the flag set of a made-up command "serve", with a flag of
// each kind completion knows.
func testFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringP("dir", "d", "", "data directory")
	CompleteDirs(fs, "dir")
	fs.String("config", "", "configuration file")
	CompleteFiles(fs, "config")
	fs.String("mode", "fast", "fast or safe")
	CompleteValues(fs, "mode", "fast", "safe")
	Detail(fs, "mode", "safe syncs every write.")
	fs.Bool("verbose", false, "say more")
	fs.Duration("timeout", 0, "give up after this long")
	fs.Int("secret", 0, "for tests")
	fs.MarkHidden("secret")
	return fs
}

func testCompleter() *Completer {
	return &Completer{
		TopFlags: []string{"--help", "--version"},
		Commands: []Command{
			{Name: "serve", Flags: testFlags, Exec: true},
			{Name: "status", Flags: testFlags},
			{Name: "shell", Args: []string{"bash", "fish"}},
		},
	}
}

func TestComplete(t *testing.T) {
	c := testCompleter()
	for _, tc := range []struct {
		words string // space-separated; a trailing space is an empty word
		want  string // candidates, space-separated, then ":kind"
	}{
		{"", "help serve status shell :words"},
		{"s", "serve status shell :words"},
		{"--", "--help --version :words"},
		{"help st", "status :words"},
		{"help status x", ":words"},
		{"nosuch --", ":words"},
		{"shell ", "bash fish :words"},
		{"shell f", "fish :words"},
		{"shell bash ", ":words"},
		{"status --", "--dir --config --mode --verbose --timeout --help :words"},
		{"status -", "--dir -d --config --mode --verbose --timeout --help -h :words"},
		{"status --mode ", "fast safe :words"},
		{"status --mode s", "safe :words"},
		{"status --mode=", "--mode=fast --mode=safe :words"},
		{"status --nosuch=", ":words"},
		{"status --dir ", ":dirs"},
		{"status -d ", ":dirs"},
		{"status --config ", ":files"},
		{"status --verbose ", ":words"}, // a bool takes no value
		{"status --mode safe ", ":words"},
		{"serve ", ":commands"},
		{"serve --verbose ", ":commands"},
		{"serve --mode safe ", ":commands"},
		{"serve redis ", ":files"},
		{"serve -- ", ":commands"},
		{"serve -- redis ", ":files"},
		{"status -- ", ":commands"},
	} {
		words := strings.Split(tc.words, " ")
		cands, kind := c.Complete(words)
		got := strings.Join(append(cands, ":"+kind), " ")
		if got != tc.want {
			t.Errorf("Complete(%q) = %q, want %q", tc.words, got, tc.want)
		}
	}
}

// TestAnswer: the protocol the scripts read, and bash's "--flag = value"
// joined back into one word.
func TestAnswer(t *testing.T) {
	c := testCompleter()
	for words, want := range map[string]string{
		"status --mode = s": "--mode=safe\n:words\n",
		"status --mode =":   "--mode=fast\n--mode=safe\n:words\n",
		"status --dir = x":  ":dirs\n",
		"= x":               ":words\n",
	} {
		var b bytes.Buffer
		c.Answer(&b, strings.Split(words, " "))
		if b.String() != want {
			t.Errorf("Answer(%q) = %q, want %q", words, b.String(), want)
		}
	}
}

func TestScript(t *testing.T) {
	if got := Shells(); !slices.Equal(got, []string{"bash", "fish", "zsh"}) {
		t.Errorf("Shells() = %v", got)
	}
	for _, sh := range Shells() {
		s, ok := Script(sh, "mydaemon")
		if !ok || strings.Contains(s, "@PROG@") || !strings.Contains(s, "mydaemon") || !strings.Contains(s, CompleteCommand) {
			t.Errorf("Script(%s): ok %v, want the program's name and %s in it, no placeholder:\n%s", sh, ok, CompleteCommand, s)
		}
	}
	if _, ok := Script("csh", "mydaemon"); ok {
		t.Error("Script(csh): a script for a shell it does not know")
	}
}

func TestGroupFlags(t *testing.T) {
	groups := []Group{
		{Title: "Storage", Flags: []string{"dir", "status/timeout"}},
		{Title: "Empty", Flags: []string{"nosuch"}},
		{Title: "Output", Flags: []string{"verbose", "mode"}},
	}
	describe := func(cmd string) string {
		var parts []string
		for _, g := range GroupFlags(groups, cmd, testFlags()) {
			var names []string
			g.Flags.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
			parts = append(parts, g.Title+": "+strings.Join(names, " "))
		}
		return strings.Join(parts, "; ")
	}
	// The groups' order, the flag set's order inside a group, hidden
	// flags left out, empty groups left out, the rest last.
	if got, want := describe("serve"), "Storage: dir; Output: mode verbose; Other flags: config timeout"; got != want {
		t.Errorf("serve: %s\nwant %s", got, want)
	}
	// "COMMAND/FLAG" places the flag for that command alone.
	if got, want := describe("status"), "Storage: dir timeout; Output: mode verbose; Other flags: config"; got != want {
		t.Errorf("status: %s\nwant %s", got, want)
	}
}

func TestHelpWrite(t *testing.T) {
	fs := testFlags()
	h := Help{
		Usage:    []string{"prog serve [flags] -- COMMAND", "prog serve --help"},
		Brief:    "Serve it.",
		Examples: "  prog serve -- redis-server\n",
		Groups:   GroupFlags([]Group{{Title: "Output", Flags: []string{"verbose"}}}, "serve", fs),
		More:     "More: man prog-serve",
	}
	var b bytes.Buffer
	h.Write(&b)
	want := `Usage:
  prog serve [flags] -- COMMAND
  prog serve --help

Serve it.

Examples:
  prog serve -- redis-server

Output:
      --verbose   say more

Other flags:
  -d, --dir string         data directory
      --config string      configuration file
      --mode string        fast or safe (default "fast")
      --timeout duration   give up after this long

More: man prog-serve
`
	if b.String() != want {
		t.Errorf("help:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestDetail(t *testing.T) {
	fs := testFlags()
	if got := DetailOf(fs.Lookup("mode")); got != "safe syncs every write." {
		t.Errorf("DetailOf(mode) = %q", got)
	}
	if got := DetailOf(fs.Lookup("dir")); got != "" {
		t.Errorf("DetailOf(dir) = %q, want none", got)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"check", "status", "stop", "run", "version", "help", "--help"}
	for typed, want := range map[string]string{
		"chek": "check", "stauts": "status", "stp": "stop", "rnu": "run", "versoin": "version",
		"--hlep": "--help", "xyzzy": "", "s": "", "statistics": "", "": "",
	} {
		if got := Suggest(typed, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", typed, got, want)
		}
	}
}

func TestSuggestFlag(t *testing.T) {
	for args, want := range map[string]string{
		"--verbos": "verbose", "--tiemout": "timeout", "--secre": "", // hidden
		"--nonsense": "", "-x": "", "--mode": "",
	} {
		fs := testFlags()
		fs.SetOutput(&bytes.Buffer{})
		err := fs.Parse([]string{args})
		if got := SuggestFlag(fs, err); got != want {
			t.Errorf("parse %s: error %v, suggestion %q, want %q", args, err, got, want)
		}
	}
	if got := SuggestFlag(testFlags(), errors.New("unknown flag: --verbos")); got != "" {
		t.Errorf("a plain error: suggestion %q, want none", got)
	}
}

func TestUnknownFlag(t *testing.T) {
	for args, want := range map[string]string{"--port": "--port", "-p": "-p", "-vp": "-vp", "--mode": ""} {
		fs := testFlags()
		fs.SetOutput(&bytes.Buffer{})
		err := fs.Parse([]string{args})
		got := ""
		if err != nil {
			got, _ = UnknownFlag(err)
		}
		if got != want {
			t.Errorf("parse %s: error %v, unknown flag %q, want %q", args, err, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"", "abc", 3}, {"check", "chek", 1}, {"kitten", "sitting", 3}, {"stauts", "status", 1}, {"rnu", "run", 1}, {"ca", "abc", 3}, {"é", "e", 1}} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
