package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
)

// TestHelpFits: every command's --help, and dirlockd --help, fits a
// screen: at most cli.HelpLines lines of at most cli.HelpWidth columns, usage
// first, then examples, then the flags, and a pointer to the man page.
func TestHelpFits(t *testing.T) {
	cmds := commands()
	pages := map[string]string{"": usage(cmds)}
	for _, c := range cmds {
		if c.brief == "" || c.about == "" || c.examples == "" {
			t.Errorf("dirlockd %s: its doc lacks a brief (for --help), an about (for the man page) or examples", c.name)
		}
		var out, stderr bytes.Buffer
		if code := c.main([]string{"--help"}, &out, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("dirlockd %s --help: exit %d, stderr %q", c.name, code, stderr.String())
		}
		pages[c.name] = out.String()
	}
	for name, text := range pages {
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		if len(lines) > cli.HelpLines {
			t.Errorf("dirlockd %s --help: %d lines, want at most %d", name, len(lines), cli.HelpLines)
		}
		for i, l := range lines {
			if n := len([]rune(l)); n > cli.HelpWidth {
				t.Errorf("dirlockd %s --help: line %d is %d columns, want at most %d: %q", name, i+1, n, cli.HelpWidth, l)
			}
		}
		usageAt := strings.Index(text, "Usage:\n")
		examplesAt := strings.Index(text, "\nExamples:\n")
		flagsAt := strings.Index(text, "\n      --") // the first long-only flag line
		if d := strings.Index(text, "\n  -D, --datadir"); d >= 0 && (flagsAt < 0 || d < flagsAt) {
			flagsAt = d
		}
		if usageAt < 0 || examplesAt < usageAt {
			t.Errorf("dirlockd %s --help: want Usage: (at %d) then Examples: (at %d)", name, usageAt, examplesAt)
		}
		if flagsAt >= 0 && flagsAt < examplesAt {
			t.Errorf("dirlockd %s --help: flags (at %d) before the examples (at %d)", name, flagsAt, examplesAt)
		}
		if name != "" && !strings.Contains(text, "man dirlockd-"+name) {
			t.Errorf("dirlockd %s --help does not point at man dirlockd-%s", name, name)
		}
	}
}

// TestFlagGroups: flagGroups places every visible flag of every command,
// and run's flags fall into the groups its help promises.
func TestFlagGroups(t *testing.T) {
	for _, c := range commands() {
		for _, g := range cli.GroupFlags(flagGroups, c.name, c.flags()) {
			if g.Title == cli.OtherFlags {
				g.Flags.VisitAll(func(f *pflag.Flag) {
					t.Errorf("dirlockd %s --%s is in no group of flagGroups: give it one", c.name, f.Name)
				})
			}
		}
	}
	var titles []string
	for _, g := range cli.GroupFlags(flagGroups, "run", lookup(commands(), "run").flags()) {
		titles = append(titles, g.Title)
	}
	want := "Interlock, Server and signals, Readiness, Rechecks and storage, Lease (etcd), Output and logging"
	if got := strings.Join(titles, ", "); got != want {
		t.Errorf("run's flag groups: %s; want %s", got, want)
	}
}

func TestDidYouMean(t *testing.T) {
	cmds := commands()
	for typed, want := range map[string]string{
		"chek": "check", "stauts": "status", "stp": "stop", "rnu": "run", "versoin": "version",
		"hlep": "help", "--verison": "--version", "--hlep": "--help", "xyzzy": "", "s": "", "statistics": "",
	} {
		got := ""
		if s := didYouMean(typed, cmds); s != "" {
			got = strings.TrimSuffix(strings.TrimPrefix(s, `; did you mean "`), `"?`)
		}
		if got != want {
			t.Errorf("didYouMean(%q) = %q, want %q", typed, got, want)
		}
	}
	fs := lookup(cmds, "run").flags()
	for typed, want := range map[string]string{
		"ready-notfy": "ready-notify", "readytcp": "ready-tcp", "datdir": "datadir",
		"lease-tll": "lease-ttl", "nonsense": "", "worker": "", // hidden in stress, absent in run
	} {
		err := fs.Parse([]string{"--" + typed})
		got := cli.SuggestFlag(fs, err)
		if err == nil || got != want {
			t.Errorf("run --%s: error %v, suggestion %q; want %q", typed, err, got, want)
		}
	}
}
