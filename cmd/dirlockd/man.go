//go:build manpages

package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/stress"
)

// The man pages are rendered as Markdown from the same docs and flag sets
// as --help, and converted to roff with go-md2man by dirlockd __man (make
// man). Built only with -tags manpages, so that the shipped binary carries
// no Markdown parser.

const manDatePlaceholder = "@DATE@"

// A manItem is one entry of a definition list: EXIT STATUS, ENVIRONMENT,
// FILES.
type manItem struct{ term, meaning string }

// exitStatuses are dirlockd(1)'s EXIT STATUS: run's, and those every
// command shares; each command's page gives its own (commandExits).
var exitStatuses = []manItem{
	{"0", "success; for run, the server exited 0"},
	{"1\u20134", "check, status, stop and wait: the state found (see their pages)"},
	{fmt.Sprint(exitcode.Usage), "usage error"},
	{fmt.Sprint(exitcode.Unavailable), "run and stress with --etcd: etcd unavailable; the server never started"},
	{fmt.Sprint(exitcode.Internal), "internal error"},
	{fmt.Sprint(exitcode.Held), "run: the data directory is held by a live instance (--conflict-exit-code changes it), or with --etcd the lease key by another holder"},
	{fmt.Sprint(exitcode.Orphans), "run: orphaned processes of a dead holder survive"},
	{fmt.Sprint(exitcode.Invalid), "run: invalid data directory, pidfile or configuration, host-local locks on shared storage, or a full or read-only filesystem; with --etcd, a lease key of another tool, no permission on it, or a fencing token below the fence file's"},
	{fmt.Sprint(exitcode.NoExec), "run: COMMAND is not executable"},
	{fmt.Sprint(exitcode.NotFound), "run: COMMAND not found"},
	{fmt.Sprintf("%d+N", exitcode.SignalBase), "run: the server's main process was killed by signal N; otherwise run exits with its status"},
}

// commandExits are each command's EXIT STATUS (docs/cli.md tells the same).
var commandExits = map[string][]manItem{
	"run": {
		{"0", "the server exited 0; otherwise run exits with the main process's status"},
		{fmt.Sprintf("%d+N", exitcode.SignalBase), "the server's main process was killed by signal N"},
		{fmt.Sprint(exitcode.Held), "the data directory is held by a live instance (--conflict-exit-code changes it), or with --etcd the lease key by another holder"},
		{fmt.Sprint(exitcode.Orphans), "orphaned processes of a dead holder survive"},
		{fmt.Sprint(exitcode.Invalid), "invalid data directory, pidfile or configuration, host-local locks on shared storage, or a full or read-only filesystem; with --etcd, a lease key of another tool, no permission on it, a fencing token below the fence file's, or no etcd agent"},
		{fmt.Sprint(exitcode.Unavailable), "with --etcd: etcd unavailable; the server never started"},
		{fmt.Sprint(exitcode.NoExec), "COMMAND is not executable"},
		{fmt.Sprint(exitcode.NotFound), "COMMAND not found"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
		{fmt.Sprint(exitcode.Internal), "internal error"},
	},
	"check": {
		{fmt.Sprint(exitcode.CheckFree), "free or stale: nobody is left, a start is safe"},
		{fmt.Sprint(exitcode.CheckHeld), "held by a live instance (with --etcd, or the lease key held by another holder)"},
		{fmt.Sprint(exitcode.CheckOrphans), "orphaned processes of a dead holder still hold the directory"},
		{fmt.Sprint(exitcode.CheckInvalid), "invalid or inaccessible data directory or pidfile, host-local locks on shared storage, or with --etcd etcd unreachable"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
	},
	"status": {
		{fmt.Sprint(exitcode.StatusRunning), "running: held by a live instance"},
		{fmt.Sprint(exitcode.StatusDead), "dead: not running, but the record says the holder did not stop cleanly, or survivors of the dead holder live on (dirlockd stop --survivors)"},
		{fmt.Sprint(exitcode.StatusNotRunning), "stopped: not running"},
		{fmt.Sprint(exitcode.StatusStopping), "stopping: held, and the holder is stopping the server"},
		{fmt.Sprint(exitcode.StatusUnsupervised), "running unsupervised: dirlockd run is dead, the server's recorded main process runs on (dirlockd stop stops it)"},
		{fmt.Sprint(exitcode.StatusUnknown), "unknown: the data directory or pidfile cannot be inspected, or a usage error (LSB has no code of its own for it)"},
	},
	"stop": {
		{"0", "the directory is free: stopped, or was not running"},
		{"1", "still held after --timeout, the holder cannot be proven, survivors without --survivors, not allowed, or the signal failed"},
		{"3", "invalid data directory or pidfile"},
		{fmt.Sprint(exitcode.Usage), "usage error (also --kill-after not shorter than --timeout)"},
	},
	"reload": {
		{"0", "the signal was sent"},
		{"1", "the holder or main process cannot be proven, not allowed, or the signal failed"},
		{"3", "invalid data directory or pidfile"},
		{"7", "not running (LSB's \"program is not running\")"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
	},
	"wait": {
		{"0", "reached"},
		{"1", "timed out"},
		{"3", "invalid data directory or pidfile"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
	},
	"stress": {
		{"0", "PASS"},
		{"1", "FAIL or INCONCLUSIVE"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
		{fmt.Sprint(exitcode.Unavailable), "with --etcd: etcd unavailable"},
		{fmt.Sprint(exitcode.Internal), "internal error"},
		{fmt.Sprint(exitcode.Orphans), "processes of an earlier holder still hold the directory"},
		{fmt.Sprint(exitcode.Invalid), "the directory cannot carry the interlock, or its witness files may not be written"},
	},
	"completion": {
		{"0", "the script was printed"},
		{fmt.Sprint(exitcode.Usage), "no shell, or one other than bash, zsh and fish"},
	},
	"version": {
		{"0", "always, but for a usage error"},
		{fmt.Sprint(exitcode.Usage), "usage error"},
	},
}

// manEnvironment is dirlockd(1)'s ENVIRONMENT.
var manEnvironment = []manItem{
	{"DIRLOCKD_DATADIR", "the data directory when no -D is given. run sets it for COMMAND, with DIRLOCKD_PIDFILE, DIRLOCKD_LOCK_FD (the locked pidfile's descriptor, 3), DIRLOCKD_SHM_ID and DIRLOCKD_TOKEN."},
	{"DIRLOCKD_ETCD", "the etcd endpoints when no --etcd is given (docs/lease.md); DIRLOCKD_ETCD_PASSWORD the password for an --etcd-user without one. run --etcd sets DIRLOCKD_FENCING_TOKEN, DIRLOCKD_LEASE_KEY and DIRLOCKD_LEASE_TTL for COMMAND."},
	{"NOTIFY_SOCKET", "systemd's notification socket: run tells systemd READY=1 and STOPPING=1 through it (Type=notify), and gives COMMAND a socket of its own in its place."},
}

// manPages renders dirlockd(1) and one page per command, as Markdown by
// file name (dirlockd.1, dirlockd-run.1, ...). The page's date is
// left as manDatePlaceholder.
func manPages(cmds []*subcommand) map[string]string {
	pages := map[string]string{"dirlockd.1": mainPage(cmds)}
	for _, c := range cmds {
		pages["dirlockd-"+c.name+".1"] = commandPage(c)
	}
	return pages
}

func mainPage(cmds []*subcommand) string {
	var b strings.Builder
	title(&b, "dirlockd", "one server process tree per data directory")
	b.WriteString("# SYNOPSIS\n\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "**dirlockd** %s\n\n", mdEscape(c.synopsis[0]))
	}
	b.WriteString("# DESCRIPTION\n\n")
	b.WriteString(mdText(`dirlockd guarantees that exactly one server process tree ever works in a data directory. It holds a kernel lock on a pidfile inside the directory and a System V shared-memory segment whose attach count reveals orphaned children of a crashed holder, and lets a new holder in only when every witness agrees that nobody is left.`))
	b.WriteString("# COMMANDS\n\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "**%s**\n: %s; see **dirlockd-%s**(1).\n\n", c.name, mdEscape(c.summary), c.name)
	}
	b.WriteString("# GLOBAL FLAGS\n\nEvery command but completion and version takes these.\n\n")
	flagList(&b, globalFlags())
	b.WriteString("# EXIT STATUS\n\n")
	itemList(&b, exitStatuses)
	b.WriteString("# ENVIRONMENT\n\n")
	itemList(&b, manEnvironment)
	b.WriteString("# FILES\n\n")
	itemList(&b, manFiles(""))
	b.WriteString("# EXAMPLES\n\n```\n")
	for _, c := range cmds {
		b.WriteString(c.examples)
	}
	b.WriteString("```\n\n")
	b.WriteString("# SEE ALSO\n\n")
	var see []string
	for _, c := range cmds {
		see = append(see, fmt.Sprintf("**dirlockd-%s**(1)", c.name))
	}
	see = append(see, "**flock**(1)", "**start-stop-daemon**(8)", "**systemd.service**(5)", "**systemd.kill**(5)", "**sd_notify**(3)")
	b.WriteString(strings.Join(see, ", ") + "\n")
	return b.String()
}

// itemList writes items as a definition list.
func itemList(b *strings.Builder, items []manItem) {
	for _, e := range items {
		fmt.Fprintf(b, "**%s**\n: %s\n\n", mdEscape(e.term), mdEscape(e.meaning))
	}
}

// manDocDir is where the Debian package installs the guides; make install
// puts them in PREFIX/share/doc/dirlockd.
const manDocDir = "/usr/share/doc/dirlockd/"

// manFiles are the FILES of command cmd's page, or of dirlockd(1) for "".
func manFiles(cmd string) []manItem {
	pidfile := globalFlags().Lookup("pidfile").DefValue
	var files []manItem
	if cmd != "completion" && cmd != "version" {
		files = append(files, manItem{"DIR/" + pidfile,
			"the locked pidfile and its record (--pidfile names it). dirlockd never unlinks it: a removed pidfile would let a second holder lock a new file while the first still runs."})
	}
	switch cmd {
	case "", "run":
		files = append(files,
			manItem{"DIR/" + lease.TokenFileName(pidfile), "with run --etcd, the highest fencing token that ever ran in the directory: a start with a lower one is refused."},
			manItem{"/usr/libexec/dirlockd/dirlockd-etcd", "the etcd agent that run --etcd starts (package dirlockd-etcd; PREFIX/libexec/dirlockd/ after make install)."},
			manItem{"/usr/lib/systemd/system/dirlockd@.service", "the systemd unit template: dirlockd@NAME.service runs the server that /etc/dirlockd/NAME.conf names, under dirlockd run."})
	case "stress":
		files = append(files,
			manItem{"DIR/" + stress.LogName, "the witness log: a line when a hold begins, ends, or is killed, from every host that ran against DIR."},
			manItem{"DIR/" + stress.CounterName, "the witness counter: each hold adds one."})
	case "completion":
		files = append(files,
			manItem{"/usr/share/bash-completion/completions/dirlockd", "bash's script, as make install and the package put it"},
			manItem{"/usr/share/zsh/site-functions/_dirlockd", "zsh's"},
			manItem{"/usr/share/fish/vendor_completions.d/dirlockd.fish", "fish's"})
	}
	return append(files, manItem{manDocDir, "the guides: README.md, cli.md (every command), design.md, lease.md (run --etcd), nfs.md (shared storage), format.md (the pidfile); PREFIX/share/doc/dirlockd/ after make install. Compressed (.md.gz) in the Debian package."})
}

// manEnvironmentOf is the ENVIRONMENT of command c's page: what of
// manEnvironment its flags read.
func manEnvironmentOf(c *subcommand) []manItem {
	fs := c.flags()
	var env []manItem
	for _, e := range manEnvironment {
		switch {
		case e.term == "DIRLOCKD_DATADIR" && fs.Lookup("datadir") != nil,
			e.term == "DIRLOCKD_ETCD" && fs.Lookup("etcd") != nil,
			e.term == "NOTIFY_SOCKET" && c.name == "run":
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
	var b strings.Builder
	title(&b, "dirlockd-"+c.name, c.summary)
	b.WriteString("# SYNOPSIS\n\n")
	for _, s := range c.synopsis {
		fmt.Fprintf(&b, "**dirlockd** %s\n\n", mdEscape(s))
	}
	b.WriteString("# DESCRIPTION\n\n")
	b.WriteString(mdText(c.about))
	if groups := groupFlags(c.name, c.flags()); len(groups) > 0 {
		b.WriteString("# OPTIONS\n\n")
		for _, g := range groups {
			fmt.Fprintf(&b, "## %s\n\n", mdEscape(g.title))
			flagList(&b, g.flags)
		}
	}
	b.WriteString("# EXIT STATUS\n\n")
	itemList(&b, commandExits[c.name])
	b.WriteString("# ENVIRONMENT\n\n")
	if env := manEnvironmentOf(c); len(env) > 0 {
		itemList(&b, env)
	} else {
		fmt.Fprintf(&b, "dirlockd %s reads no environment variable of its own.\n\n", c.name)
	}
	b.WriteString("# FILES\n\n")
	itemList(&b, manFiles(c.name))
	fmt.Fprintf(&b, "# EXAMPLES\n\n```\n%s```\n\n# SEE ALSO\n\n", c.examples)
	see := []string{"**dirlockd**(1)"}
	for _, o := range commands() {
		if o.name != c.name {
			see = append(see, fmt.Sprintf("**dirlockd-%s**(1)", o.name))
		}
	}
	for _, p := range seeAlso[c.name] {
		name, sec, _ := strings.Cut(p, "(")
		see = append(see, "**"+name+"**("+sec)
	}
	b.WriteString(strings.Join(see, ", ") + "\n")
	return b.String()
}

// title writes the page's .TH line, the date left as manDatePlaceholder, and its NAME
// section. The page carries no version, so that it changes only with what
// it says.
func title(b *strings.Builder, name, summary string) {
	fmt.Fprintf(b, "# %s 1 \""+manDatePlaceholder+"\" \"dirlockd\" \"User Commands\"\n\n# NAME\n\n%s - %s\n\n", strings.ToUpper(name), name, mdEscape(summary))
}

// flagList writes fs's visible flags as a definition list: what --help
// says of each, its value's name, its default.
func flagList(b *strings.Builder, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		value, usage := pflag.UnquoteUsage(f)
		if f.Shorthand != "" {
			fmt.Fprintf(b, "**-%s**, ", f.Shorthand)
		}
		fmt.Fprintf(b, "**--%s**", f.Name)
		if value != "" {
			fmt.Fprintf(b, " *%s*", value)
		}
		if d := f.DefValue; d != "" && d != "0" && d != "0s" && d != "false" && d != "[]" {
			usage += " (default " + d + ")"
		}
		if d := f.Annotations[annotationDetail]; len(d) > 0 {
			usage += ". " + d[0]
		}
		fmt.Fprintf(b, "\n: %s\n\n", mdEscape(usage))
	})
}

// mdText renders help text as Markdown: runs of unindented lines are
// paragraphs, to be filled; indented lines (lists, commands) stay as they
// are, as preformatted text.
func mdText(text string) string {
	var b strings.Builder
	for _, para := range strings.Split(text, "\n\n") {
		lines := strings.Split(para, "\n")
		for len(lines) > 0 {
			pre := strings.HasPrefix(lines[0], " ")
			n := 1
			for n < len(lines) && strings.HasPrefix(lines[n], " ") == pre {
				n++
			}
			if pre {
				fmt.Fprintf(&b, "```\n%s\n```\n\n", strings.Join(lines[:n], "\n"))
			} else {
				fmt.Fprintf(&b, "%s\n\n", mdEscape(strings.Join(lines[:n], " ")))
			}
			lines = lines[n:]
		}
	}
	return b.String()
}

var (
	mdSpecial    = regexp.MustCompile("[\\\\`*_\\[\\]<>#|~]")
	mdLineMarker = regexp.MustCompile(`^([-+:]|\d+\.)`)
)

// mdEscape makes s literal text in Markdown, on one line.
func mdEscape(s string) string {
	s = mdSpecial.ReplaceAllString(s, `\$0`)
	return mdLineMarker.ReplaceAllString(s, `\$1`)
}
