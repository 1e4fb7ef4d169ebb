package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// A doc is what a command says about itself. --help, the man pages and
// the shell completions are all made from it and from the command's flag
// set, so that none of them can say something the others do not.
type doc struct {
	name     string
	line     string   // its line in dirlockd --help, after "dirlockd "
	summary  string   // what it is for, in a phrase
	synopsis []string // its usage lines, after "dirlockd "
	about    string
	examples string // indented command lines
	multiDir bool   // -D repeats
}

// help writes the command's --help: fs is the flag set it parses, nil for
// a command without flags.
func (d *doc) help(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n", d.about)
	for _, s := range d.synopsis {
		fmt.Fprintf(w, "  dirlockd %s\n", s)
	}
	if fs != nil && fs.HasAvailableFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	}
	if d.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s", d.examples)
	}
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
	b.WriteString("dirlockd guarantees that exactly one server process tree works in a data directory.\n\nUsage:\n")
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.line))
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "  dirlockd %-*s  %s\n", width, c.line, c.summary)
	}
	fmt.Fprintf(&b, `
Global flags (every command but completion and version):
%s
Run "dirlockd COMMAND --help" or "dirlockd help COMMAND" for a command's flags
and examples; "man dirlockd" once installed.
Documentation: docs/cli.md, docs/design.md, docs/nfs.md (shared storage),
docs/lease.md (several hosts: run --etcd).
`, globalFlags().FlagUsages())
	return b.String()
}
