//go:build manpages

package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/cli/manpage"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/stress"
)

// The man pages are made from the same docs and flag sets as --help
// (package manpage), and written in roff by dirlockd __man DIR (make man).
// Built only with -tags manpages, so that the shipped binary carries no
// Markdown parser (man_off.go).

// manGenerator returns dirlockd __man DIR: write the man pages, in roff,
// into DIR. A page's date is the day its text last changed (manpage.Write).
func manGenerator() func(cmds []*subcommand, args []string, stderr io.Writer) int {
	return func(cmds []*subcommand, args []string, stderr io.Writer) int {
		if len(args) != 1 {
			return usageError(stderr, manCommand, "want the directory to write the man pages to")
		}
		if err := manpage.Write(args[0], manPages(cmds), time.Now()); err != nil {
			fmt.Fprintf(stderr, "dirlockd %s: %v\n", manCommand, err)
			return exitcode.Internal
		}
		return 0
	}
}

// exitStatuses are dirlockd(1)'s EXIT STATUS: run's, and those every
// command shares; each command's page gives its own (commandExits).
var exitStatuses = []manpage.Item{
	{Term: "0", Meaning: "success; for run, the server exited 0"},
	{Term: "1\u20134", Meaning: "check, status, stop and wait: the state found (see their pages)"},
	{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
	{Term: fmt.Sprint(exitcode.Unavailable), Meaning: "run and stress with --etcd: etcd unavailable; the server never started"},
	{Term: fmt.Sprint(exitcode.Internal), Meaning: "internal error"},
	{Term: fmt.Sprint(exitcode.Held), Meaning: "run: the data directory is held by a live instance (--conflict-exit-code changes it), or with --etcd the lease key by another holder"},
	{Term: fmt.Sprint(exitcode.Orphans), Meaning: "run: orphaned processes of a dead holder survive"},
	{Term: fmt.Sprint(exitcode.Invalid), Meaning: "run: invalid data directory, pidfile or configuration, host-local locks on shared storage, or a full or read-only filesystem; with --etcd, a lease key of another tool, no permission on it, or a fencing token below the fence file's"},
	{Term: fmt.Sprint(exitcode.NoExec), Meaning: "run: COMMAND is not executable"},
	{Term: fmt.Sprint(exitcode.NotFound), Meaning: "run: COMMAND not found"},
	{Term: fmt.Sprintf("%d+N", exitcode.SignalBase), Meaning: "run: the server's main process was killed by signal N; otherwise run exits with its status"},
}

// commandExits are each command's EXIT STATUS (docs/cli.md tells the same).
var commandExits = map[string][]manpage.Item{
	"run": {
		{Term: "0", Meaning: "the server exited 0; otherwise run exits with the main process's status"},
		{Term: fmt.Sprintf("%d+N", exitcode.SignalBase), Meaning: "the server's main process was killed by signal N"},
		{Term: fmt.Sprint(exitcode.Held), Meaning: "the data directory is held by a live instance (--conflict-exit-code changes it), or with --etcd the lease key by another holder"},
		{Term: fmt.Sprint(exitcode.Orphans), Meaning: "orphaned processes of a dead holder survive"},
		{Term: fmt.Sprint(exitcode.Invalid), Meaning: "invalid data directory, pidfile or configuration, host-local locks on shared storage, or a full or read-only filesystem; with --etcd, a lease key of another tool, no permission on it, a fencing token below the fence file's, or no etcd agent"},
		{Term: fmt.Sprint(exitcode.Unavailable), Meaning: "with --etcd: etcd unavailable; the server never started"},
		{Term: fmt.Sprint(exitcode.NoExec), Meaning: "COMMAND is not executable"},
		{Term: fmt.Sprint(exitcode.NotFound), Meaning: "COMMAND not found"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
		{Term: fmt.Sprint(exitcode.Internal), Meaning: "internal error"},
	},
	"check": {
		{Term: fmt.Sprint(exitcode.CheckFree), Meaning: "free or stale: nobody is left, a start is safe"},
		{Term: fmt.Sprint(exitcode.CheckHeld), Meaning: "held by a live instance (with --etcd, or the lease key held by another holder)"},
		{Term: fmt.Sprint(exitcode.CheckOrphans), Meaning: "orphaned processes of a dead holder still hold the directory"},
		{Term: fmt.Sprint(exitcode.CheckInvalid), Meaning: "invalid or inaccessible data directory or pidfile, host-local locks on shared storage, or with --etcd etcd unreachable"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
	},
	"status": {
		{Term: fmt.Sprint(exitcode.StatusRunning), Meaning: "running: held by a live instance"},
		{Term: fmt.Sprint(exitcode.StatusDead), Meaning: "dead: not running, but the record says the holder did not stop cleanly, or survivors of the dead holder live on (dirlockd stop --survivors)"},
		{Term: fmt.Sprint(exitcode.StatusNotRunning), Meaning: "stopped: not running"},
		{Term: fmt.Sprint(exitcode.StatusStopping), Meaning: "stopping: held, and the holder is stopping the server"},
		{Term: fmt.Sprint(exitcode.StatusUnsupervised), Meaning: "running unsupervised: dirlockd run is dead, the server's recorded main process runs on (dirlockd stop stops it)"},
		{Term: fmt.Sprint(exitcode.StatusUnknown), Meaning: "unknown: the data directory or pidfile cannot be inspected, or a usage error (LSB has no code of its own for it)"},
	},
	"stop": {
		{Term: "0", Meaning: "the directory is free: stopped, or was not running"},
		{Term: "1", Meaning: "still held after --timeout, the holder cannot be proven, survivors without --survivors, not allowed, or the signal failed"},
		{Term: "3", Meaning: "invalid data directory or pidfile"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error (also --kill-after not shorter than --timeout)"},
	},
	"reload": {
		{Term: "0", Meaning: "the signal was sent"},
		{Term: "1", Meaning: "the holder or main process cannot be proven, not allowed, or the signal failed"},
		{Term: "3", Meaning: "invalid data directory or pidfile"},
		{Term: "7", Meaning: "not running (LSB's \"program is not running\")"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
	},
	"wait": {
		{Term: "0", Meaning: "reached"},
		{Term: "1", Meaning: "timed out"},
		{Term: "3", Meaning: "invalid data directory or pidfile"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
	},
	"stress": {
		{Term: "0", Meaning: "PASS"},
		{Term: "1", Meaning: "FAIL or INCONCLUSIVE"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
		{Term: fmt.Sprint(exitcode.Unavailable), Meaning: "with --etcd: etcd unavailable"},
		{Term: fmt.Sprint(exitcode.Internal), Meaning: "internal error"},
		{Term: fmt.Sprint(exitcode.Orphans), Meaning: "processes of an earlier holder still hold the directory"},
		{Term: fmt.Sprint(exitcode.Invalid), Meaning: "the directory cannot carry the interlock, or its witness files may not be written"},
	},
	"completion": {
		{Term: "0", Meaning: "the script was printed"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "no shell, or one other than bash, zsh and fish"},
	},
	"version": {
		{Term: "0", Meaning: "always, but for a usage error"},
		{Term: fmt.Sprint(exitcode.Usage), Meaning: "usage error"},
	},
}

// manEnvironment is dirlockd(1)'s ENVIRONMENT.
var manEnvironment = []manpage.Item{
	{Term: "DIRLOCKD_DATADIR", Meaning: "the data directory when no -D is given. run sets it for COMMAND, with DIRLOCKD_PIDFILE, DIRLOCKD_LOCK_FD (the locked pidfile's descriptor, 3), DIRLOCKD_SHM_ID and DIRLOCKD_TOKEN."},
	{Term: "DIRLOCKD_ETCD", Meaning: "the etcd endpoints when no --etcd is given (docs/lease.md); DIRLOCKD_ETCD_PASSWORD the password for an --etcd-user without one. run --etcd sets DIRLOCKD_FENCING_TOKEN, DIRLOCKD_LEASE_KEY and DIRLOCKD_LEASE_TTL for COMMAND."},
	{Term: "NOTIFY_SOCKET", Meaning: "systemd's notification socket: run tells systemd READY=1 and STOPPING=1 through it (Type=notify), and gives COMMAND a socket of its own in its place."},
}

// manPages renders dirlockd(1) and one page per command, as Markdown by
// file name (dirlockd.1, dirlockd-run.1, ...).
func manPages(cmds []*subcommand) map[string]string {
	pages := map[string]string{"dirlockd.1": mainPage(cmds)}
	for _, c := range cmds {
		pages["dirlockd-"+c.name+".1"] = commandPage(c)
	}
	return pages
}

func newPage(name, summary string) *manpage.Page {
	return manpage.New(name, 1, "dirlockd", "User Commands", summary)
}

func mainPage(cmds []*subcommand) string {
	p := newPage("dirlockd", "one server process tree per data directory")
	p.Section("SYNOPSIS")
	for _, c := range cmds {
		p.Synopsis("dirlockd", c.synopsis[0])
	}
	p.Section("DESCRIPTION")
	p.Text(`dirlockd guarantees that exactly one server process tree ever works in a data directory. It holds a kernel lock on a pidfile inside the directory and a System V shared-memory segment whose attach count reveals orphaned children of a crashed holder, and lets a new holder in only when every witness agrees that nobody is left.`)
	p.Section("COMMANDS")
	for _, c := range cmds {
		p.Markdown(fmt.Sprintf("**%s**\n: %s; see **dirlockd-%s**(1).\n\n", c.name, manpage.Escape(c.summary), c.name))
	}
	p.Section("GLOBAL FLAGS")
	p.Markdown("Every command but completion and version takes these.\n\n")
	p.Flags(globalFlags())
	p.Section("EXIT STATUS")
	p.Items(exitStatuses)
	p.Section("ENVIRONMENT")
	p.Items(manEnvironment)
	p.Section("FILES")
	p.Items(manFiles(""))
	p.Section("EXAMPLES")
	var examples strings.Builder
	for _, c := range cmds {
		examples.WriteString(c.examples)
	}
	p.Code(examples.String())
	p.Section("SEE ALSO")
	var see []string
	for _, c := range cmds {
		see = append(see, "dirlockd-"+c.name+"(1)")
	}
	p.SeeAlso(append(see, "flock(1)", "start-stop-daemon(8)", "systemd.service(5)", "systemd.kill(5)", "sd_notify(3)")...)
	return p.String()
}

// manDocDir is where the Debian package installs the guides; make install
// puts them in PREFIX/share/doc/dirlockd.
const manDocDir = "/usr/share/doc/dirlockd/"

// manFiles are the FILES of command cmd's page, or of dirlockd(1) for "".
func manFiles(cmd string) []manpage.Item {
	pidfile := globalFlags().Lookup("pidfile").DefValue
	var files []manpage.Item
	if cmd != "completion" && cmd != "version" {
		files = append(files, manpage.Item{Term: "DIR/" + pidfile,
			Meaning: "the locked pidfile and its record (--pidfile names it). dirlockd never unlinks it: a removed pidfile would let a second holder lock a new file while the first still runs."})
	}
	switch cmd {
	case "", "run":
		files = append(files,
			manpage.Item{Term: "DIR/" + lease.TokenFileName(pidfile), Meaning: "with run --etcd, the highest fencing token that ever ran in the directory: a start with a lower one is refused."},
			manpage.Item{Term: "/usr/libexec/dirlockd/dirlockd-etcd", Meaning: "the etcd agent that run --etcd starts (package dirlockd-etcd; PREFIX/libexec/dirlockd/ after make install)."},
			manpage.Item{Term: "/usr/lib/systemd/system/dirlockd@.service", Meaning: "the systemd unit template: dirlockd@NAME.service runs the server that /etc/dirlockd/NAME.conf names, under dirlockd run."})
	case "stress":
		files = append(files,
			manpage.Item{Term: "DIR/" + stress.LogName, Meaning: "the witness log: a line when a hold begins, ends, or is killed, from every host that ran against DIR."},
			manpage.Item{Term: "DIR/" + stress.CounterName, Meaning: "the witness counter: each hold adds one."})
	case "completion":
		files = append(files,
			manpage.Item{Term: "/usr/share/bash-completion/completions/dirlockd", Meaning: "bash's script, as make install and the package put it"},
			manpage.Item{Term: "/usr/share/zsh/site-functions/_dirlockd", Meaning: "zsh's"},
			manpage.Item{Term: "/usr/share/fish/vendor_completions.d/dirlockd.fish", Meaning: "fish's"})
	}
	return append(files, manpage.Item{Term: manDocDir, Meaning: "the guides: README.md, cli.md (every command), design.md, lease.md (run --etcd), nfs.md (shared storage), format.md (the pidfile); PREFIX/share/doc/dirlockd/ after make install. Compressed (.md.gz) in the Debian package."})
}

// manEnvironmentOf is the ENVIRONMENT of command c's page: what of
// manEnvironment its flags read.
func manEnvironmentOf(c *subcommand) []manpage.Item {
	fs := c.flags()
	var env []manpage.Item
	for _, e := range manEnvironment {
		switch {
		case e.Term == "DIRLOCKD_DATADIR" && fs.Lookup("datadir") != nil,
			e.Term == "DIRLOCKD_ETCD" && fs.Lookup("etcd") != nil,
			e.Term == "NOTIFY_SOCKET" && c.name == "run":
			env = append(env, e)
		}
	}
	return env
}

// seeAlso are the pages outside dirlockd's that each command's SEE ALSO
// names.
var seeAlso = map[string][]string{
	"run":    {"flock(1)", "systemd.kill(5)", "systemd.service(5)", "sd_notify(3)", "start-stop-daemon(8)"},
	"check":  {"flock(1)", "start-stop-daemon(8)"},
	"status": {"start-stop-daemon(8)", "systemctl(1)"},
	"stop":   {"kill(1)", "systemd.kill(5)", "start-stop-daemon(8)"},
	"reload": {"kill(1)", "systemd.service(5)", "start-stop-daemon(8)"},
	"wait":   {"sd_notify(3)", "flock(1)"},
	"stress": {"flock(1)", "nfs(5)"},
}

func commandPage(c *subcommand) string {
	p := newPage("dirlockd-"+c.name, c.summary)
	p.Section("SYNOPSIS")
	for _, s := range c.synopsis {
		p.Synopsis("dirlockd", s)
	}
	p.Section("DESCRIPTION")
	p.Text(c.about)
	if groups := cli.GroupFlags(flagGroups, c.name, c.flags()); len(groups) > 0 {
		p.Section("OPTIONS")
		for _, g := range groups {
			p.Subsection(g.Title)
			p.Flags(g.Flags)
		}
	}
	p.Section("EXIT STATUS")
	p.Items(commandExits[c.name])
	p.Section("ENVIRONMENT")
	if env := manEnvironmentOf(c); len(env) > 0 {
		p.Items(env)
	} else {
		p.Markdown(fmt.Sprintf("dirlockd %s reads no environment variable of its own.\n\n", c.name))
	}
	p.Section("FILES")
	p.Items(manFiles(c.name))
	p.Section("EXAMPLES")
	p.Code(c.examples)
	p.Section("SEE ALSO")
	see := []string{"dirlockd(1)"}
	for _, o := range commands() {
		if o.name != c.name {
			see = append(see, "dirlockd-"+o.name+"(1)")
		}
	}
	p.SeeAlso(append(see, seeAlso[c.name]...)...)
	return p.String()
}
