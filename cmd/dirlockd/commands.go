package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/cli"
)

// A doc is what a command says about itself. --help, the man pages and
// the shell completions are all made from it and from the command's flag
// set (package cli), so that none of them can say something the others do
// not.
type doc struct {
	name     string
	summary  string   // what it is for, in a phrase
	synopsis []string // its usage lines, after "dirlockd "
	brief    string   // what --help says of it: a few short lines
	about    string   // what its man page says of it, in full
	examples string   // indented command lines, the most common first
	multiDir bool     // -D repeats
	exec     bool     // COMMAND [ARGS...] follows its flags (run)
	args     []string // what its one argument is, if it takes no flags (completion)
}

// help writes the command's --help: usage, what it does, examples, then
// the flags by group, and where the rest is told. fs is the flag set it
// parses, nil for a command without flags.
func (d *doc) help(w io.Writer, fs *pflag.FlagSet) {
	h := cli.Help{Brief: d.brief, Examples: d.examples,
		More: fmt.Sprintf("More: man dirlockd-%s; guides in %s", d.name, docsPointer())}
	for _, s := range d.synopsis {
		h.Usage = append(h.Usage, "dirlockd "+s)
	}
	if fs != nil {
		h.Groups = cli.GroupFlags(flagGroups, d.name, fs)
	}
	h.Write(w)
}

// flagGroups places flags in the groups --help and the man pages list
// them in, in this order. A flag is looked up as "COMMAND/FLAG", then as
// "FLAG"; one in no group is listed under cli.OtherFlags, and
// TestFlagGroups fails: each new flag gets its place here. (A name means
// one thing in every command but where "COMMAND/FLAG" says otherwise:
// --user is the server's user.)
var flagGroups = []cli.Group{
	{Title: "Interlock", Flags: []string{"datadir", "pidfile", "lock-method", "wait", "conflict-exit-code"}},
	{Title: "Server and signals", Flags: []string{"user", "main-pid-file", "signal-group", "stop-timeout", "kill-mode", "stop-signal", "reload-signal"}},
	{Title: "Stopping", Flags: []string{"signal", "stop/timeout", "kill-after", "survivors"}},
	{Title: "Waiting", Flags: []string{"for", "wait/timeout"}},
	{Title: "Readiness", Flags: []string{"ready-notify", "ready-tcp"}},
	{Title: "Rechecks and storage", Flags: []string{"recheck", "on-lost", "takeover-after", "allow-local-locks"}},
	{Title: "Workers", Flags: []string{"workers", "duration", "hold", "kill-rate", "host-label", "verify"}},
	{Title: "Lease (etcd)", Flags: []string{"etcd", "lease-key", "lease-ttl", "lease-stop-timeout", "etcd-dial-timeout", "cacert", "cert", "key", "etcd-user"}},
	{Title: "Output and logging", Flags: []string{"json", "log-format", "log-level"}},
}

// docsPointer says in --help where the guides are: the installed ones
// (cli.DocDir), else the source tree's.
func docsPointer() string {
	if d := cli.DocDir("dirlockd"); d != "" {
		return d + "/"
	}
	return "docs/ in the source tree"
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

// completer answers the completion scripts (dirlockd __complete) from
// cmds' flag sets.
func completer(cmds []*subcommand) *cli.Completer {
	c := &cli.Completer{TopFlags: []string{"--help", "--version", "-h"}}
	for _, s := range cmds {
		c.Commands = append(c.Commands, cli.Command{Name: s.name, Flags: s.flags, Args: s.args, Exec: s.exec})
	}
	return c
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
`, globalFlags().FlagUsagesWrapped(cli.HelpWidth), docsPointer())
	return b.String()
}
