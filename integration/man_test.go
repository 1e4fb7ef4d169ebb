package integration

// The man pages: what make man generates, and what they say.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// renderMan formats a man page as man(1) shows it, wide enough that no flag
// is broken across lines, and returns the text and man's warnings.
func renderMan(t *testing.T, page string) (string, string) {
	t.Helper()
	cmd := exec.Command("man", "--warnings", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=250", "MANPAGER=cat", "LC_ALL=C", "MAN_KEEP_FORMATTING=")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("man -l %s: %v\n%s", page, err, stderr.String())
	}
	col := exec.Command("col", "-b")
	col.Stdin = &out
	text, err := col.Output()
	if err != nil {
		t.Fatalf("col -b: %v", err)
	}
	return string(text), stderr.String()
}

// manSection returns the text of a man page's section, subsections and
// all, up to the next section heading: a line of capitals.
func manSection(text, heading string) string {
	_, rest, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		return ""
	}
	if i := regexp.MustCompile(`\n[A-Z][A-Z ]*\n`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	return rest
}

var longFlag = regexp.MustCompile(`--[a-z][a-z-]*`)

// section returns the text of a man page's section (or of --help's), up to
// the next heading: a line that starts with a letter.
func section(text, heading string) string {
	_, rest, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		return ""
	}
	if i := regexp.MustCompile(`\n[A-Za-z]`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]]
	}
	return rest
}

// flagNames are the distinct long flags named at the start of the lines of
// text (the flag lists of --help and of a man page's OPTIONS).
func flagNames(text string) []string {
	var names []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "-D,"))
		if f := longFlag.FindString(line); f != "" && strings.HasPrefix(line, f) && !slices.Contains(names, f) {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	return names
}

// TestManPages: the committed man pages are what make man generates now
// from the help texts and flag sets, each lists exactly the flags its
// command's --help does, and man and mandoc render them without a warning.
func TestManPages(t *testing.T) {
	committed, err := filepath.Glob("../man/*.1")
	if err != nil || len(committed) == 0 {
		t.Fatalf("no man pages in ../man (%v): run make man", err)
	}
	tmp := t.TempDir()
	gen := goBuild(t, tmp, "-tags", "manpages")
	fresh, seeded := filepath.Join(tmp, "fresh"), filepath.Join(tmp, "seeded")
	for _, d := range []string{fresh, seeded} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Seeded with the committed pages, the generator keeps their dates
	// where the text is the same: what differs then is what they say.
	for _, p := range committed {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(seeded, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{fresh, seeded} {
		if out, err := exec.Command(gen, "__man", d).CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("dirlockd __man %s: %v, output %q", d, err, out)
		}
	}
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	generated, _ := filepath.Glob(filepath.Join(fresh, "*.1"))
	if !slices.Equal(names(generated), names(committed)) {
		t.Errorf("make man generates %v, man/ holds %v: run make man and commit man/", names(generated), names(committed))
	}
	for _, p := range committed {
		want, _ := os.ReadFile(filepath.Join(seeded, filepath.Base(p)))
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what make man generates from the help: run make man and commit man/", p)
		}
	}

	// What man shows agrees with --help, flag for flag.
	_, top, _ := dirlockd(t, "--help")
	pages := map[string]string{"dirlockd.1": section(top, "Global flags (every command but completion and version):")}
	for _, line := range strings.Split(section(top, "Commands:"), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			_, help, _ := dirlockd(t, f[0], "--help")
			// The flags, by group, follow the examples.
			_, flags, _ := strings.Cut(help, "\nExamples:\n")
			pages["dirlockd-"+f[0]+".1"] = flags
		}
	}
	if len(pages) != len(committed) {
		t.Errorf("dirlockd --help lists %d commands, man/ has %d pages besides dirlockd.1", len(pages)-1, len(committed)-1)
	}
	for name, help := range pages {
		p := filepath.Join("..", "man", name)
		text, warnings := renderMan(t, p)
		if warnings != "" {
			t.Errorf("man --warnings -l %s: %s", p, warnings)
		}
		heading := "OPTIONS"
		if name == "dirlockd.1" {
			heading = "GLOBAL FLAGS"
		}
		if got, want := flagNames(manSection(text, heading)), flagNames(help); !slices.Equal(got, want) {
			t.Errorf("%s %s lists %v; --help lists %v", p, heading, got, want)
		}
		if name != "dirlockd.1" && !strings.Contains(text, "NAME\n       "+strings.TrimSuffix(name, ".1")+" - ") {
			t.Errorf("%s: no NAME line for whatis:\n%s", p, text)
		}
		// Every page has the sections a reader looks for (man-pages(7)),
		// and SEE ALSO names its siblings.
		for _, h := range []string{"SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"} {
			if strings.TrimSpace(manSection(text, h)) == "" {
				t.Errorf("%s: no %s section, or an empty one", p, h)
			}
		}
		see := manSection(text, "SEE ALSO")
		for other := range pages {
			if other != name && !strings.Contains(see, strings.TrimSuffix(other, ".1")+"(1)") {
				t.Errorf("%s: SEE ALSO does not name %s:\n%s", p, other, see)
			}
		}
		if name == "dirlockd-run.1" {
			for _, ext := range []string{"flock(1)", "systemd.kill(5)", "sd_notify(3)", "start-stop-daemon(8)"} {
				if !strings.Contains(see, ext) {
					t.Errorf("%s: SEE ALSO does not name %s:\n%s", p, ext, see)
				}
			}
		}
		if !strings.Contains(manSection(text, "FILES"), "/usr/share/doc/dirlockd/") {
			t.Errorf("%s: FILES does not name the installed guides", p)
		}
	}
	lint := exec.Command("mandoc", append([]string{"-T", "lint", "-W", "warning"}, committed...)...)
	if out, err := lint.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint -W warning: %v\n%s", err, out)
	}
}
