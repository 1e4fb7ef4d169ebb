package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// A doc is what a command says about itself. --help, the man pages and
// the shell completions are all made from it and from the command's flag
// set, so that none of them can say something the others do not.
type doc struct {
	name     string
	summary  string   // what it is for, in a phrase
	synopsis []string // its usage lines, after "dirlockd "
	brief    string   // what --help says of it: a few short lines
	about    string   // what its man page says of it, in full
	examples string   // indented command lines, the most common first
	multiDir bool     // -D repeats
}

// helpWidth is the widest line --help writes: a terminal's. Help fits a
// screen (helpLines); what does not fit is in the man page.
const (
	helpWidth = 80
	helpLines = 60
)

// help writes the command's --help: usage, what it does, examples, then
// the flags by group, and where the rest is told. fs is the flag set it
// parses, nil for a command without flags.
func (d *doc) help(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprint(w, "Usage:\n")
	for _, s := range d.synopsis {
		fmt.Fprintf(w, "  dirlockd %s\n", s)
	}
	fmt.Fprintf(w, "\n%s\n", d.brief)
	if d.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s", d.examples)
	}
	if fs != nil {
		for _, g := range groupFlags(d.name, fs) {
			fmt.Fprintf(w, "\n%s:\n%s", g.title, g.flags.FlagUsagesWrapped(helpWidth))
		}
	}
	fmt.Fprintf(w, "\nMore: man dirlockd-%s; guides in %s\n", d.name, docsPointer())
}

// flagGroups places flags in the groups --help and the man pages list
// them in, in this order. A flag is looked up as "COMMAND/FLAG", then as
// "FLAG"; one in no group is listed under "Other flags", and
// TestFlagGroups fails: each new flag gets its place here. (A name means
// one thing in every command but where "COMMAND/FLAG" says otherwise:
// --user is the server's user.)
var flagGroups = []struct {
	title string
	flags []string
}{
	{"Interlock", []string{"datadir", "pidfile", "lock-method", "wait", "conflict-exit-code"}},
	{"Server and signals", []string{"user", "main-pid-file", "signal-group", "stop-timeout", "kill-mode", "stop-signal", "reload-signal"}},
	{"Stopping", []string{"signal", "stop/timeout", "kill-after", "survivors"}},
	{"Waiting", []string{"for", "wait/timeout"}},
	{"Readiness", []string{"ready-notify", "ready-tcp"}},
	{"Rechecks and storage", []string{"recheck", "on-lost", "takeover-after", "allow-local-locks"}},
	{"Workers", []string{"workers", "duration", "hold", "kill-rate", "host-label", "verify"}},
	{"Lease (etcd)", []string{"etcd", "lease-key", "lease-ttl", "lease-stop-timeout", "etcd-dial-timeout", "cacert", "cert", "key", "etcd-user"}},
	{"Output and logging", []string{"json", "log-format", "log-level"}},
}

// otherFlags is the group of flags flagGroups does not place.
const otherFlags = "Other flags"

// A flagGroup is one group of a command's visible flags.
type flagGroup struct {
	title string
	flags *pflag.FlagSet
}

// groupFlags sorts cmd's visible flags into flagGroups' groups, leaving
// out empty ones.
func groupFlags(cmd string, fs *pflag.FlagSet) []flagGroup {
	place := func(name string) string {
		for _, key := range []string{cmd + "/" + name, name} {
			for _, g := range flagGroups {
				if slices.Contains(g.flags, key) {
					return g.title
				}
			}
		}
		return otherFlags
	}
	sets := map[string]*pflag.FlagSet{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		t := place(f.Name)
		if sets[t] == nil {
			sets[t] = pflag.NewFlagSet(t, pflag.ContinueOnError)
			sets[t].SortFlags = false
		}
		sets[t].AddFlag(f)
	})
	var groups []flagGroup
	for _, g := range flagGroups {
		if s := sets[g.title]; s != nil {
			groups = append(groups, flagGroup{g.title, s})
		}
	}
	if s := sets[otherFlags]; s != nil {
		groups = append(groups, flagGroup{otherFlags, s})
	}
	return groups
}

// A subcommand is one of dirlockd's commands.
type subcommand struct {
	*doc
	// flags builds the flag set main parses, bound to variables of its own:
	// the man pages and the completion read every flag from it.
	flags func() *pflag.FlagSet
	main  func(args []string, stdout, stderr io.Writer) int
}

// manCommand is the hidden command that writes the man pages: dirlockd
// __man DIR, in a build with -tags manpages (man.go).
const manCommand = "__man"

// commands is dirlockd's command table, in the order help lists it.
func commands() []*subcommand {
	return []*subcommand{
		{&runDoc, func() *pflag.FlagSet { return runFlagSet(new(globals), new(runFlags), io.Discard) }, cmdRun},
		{&checkDoc, func() *pflag.FlagSet { return checkFlagSet(new(globals), new(inspectFlags), io.Discard) }, cmdCheck},
		{&statusDoc, func() *pflag.FlagSet { return statusFlagSet(new(globals), new(inspectFlags), io.Discard) }, cmdStatus},
		{&stopDoc, func() *pflag.FlagSet { return stopFlagSet(new(globals), new(stopFlags), io.Discard) }, cmdStop},
		{&reloadDoc, func() *pflag.FlagSet { return reloadFlagSet(new(globals), io.Discard) }, cmdReload},
		{&waitDoc, func() *pflag.FlagSet { return waitFlagSet(new(globals), new(waitFlags), io.Discard) }, cmdWait},
		{&stressDoc, func() *pflag.FlagSet { return stressFlagSet(new(globals), new(stressFlags), io.Discard) }, cmdStress},
		{&completionDoc, noFlags("completion"), cmdCompletion},
		{&versionDoc, noFlags("version"), cmdVersion},
	}
}

func noFlags(name string) func() *pflag.FlagSet {
	return func() *pflag.FlagSet { return pflag.NewFlagSet(name, pflag.ContinueOnError) }
}

func lookup(cmds []*subcommand, name string) *subcommand {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

// globalFlags is the flag set of the flags every command but version and
// completion takes.
func globalFlags() *pflag.FlagSet {
	return command(&doc{name: "dirlockd"}, new(globals), io.Discard)
}

// usage is dirlockd --help.
func usage(cmds []*subcommand) string {
	var b strings.Builder
	b.WriteString(`dirlockd: exactly one server process tree per data directory.

Usage:
  dirlockd run -D DIR [flags] -- COMMAND [ARGS...]
  dirlockd COMMAND -D DIR [flags]

Commands:
`)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-10s  %s\n", c.name, c.summary)
	}
	fmt.Fprintf(&b, `
Examples:
  dirlockd run -D /var/lib/redis -- redis-server --dir /var/lib/redis
  dirlockd check -D /var/lib/redis && echo "safe to start"
  dirlockd stop -D /var/lib/redis

Global flags (every command but completion and version):
%s
Run "dirlockd help COMMAND" for a command's flags and examples.
More: man dirlockd; guides in %s
`, globalFlags().FlagUsagesWrapped(helpWidth), docsPointer())
	return b.String()
}

// annotationDetail is a flag's annotation with what its man page says of
// it beyond the line --help gives it.
const annotationDetail = "dirlockd/detail"

// detail sets what the man page says of flag name after its --help line.
func detail(fs *pflag.FlagSet, name, text string) {
	fs.SetAnnotation(name, annotationDetail, []string{text})
}
