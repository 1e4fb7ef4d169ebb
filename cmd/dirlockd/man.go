//go:build manpages

package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// The man pages are rendered as Markdown from the same docs and flag sets
// as --help, and converted to roff with go-md2man by dirlockd __man (make
// man). Built only with -tags manpages, so that the shipped binary carries
// no Markdown parser.

const manDatePlaceholder = "@DATE@"

// exitStatuses are dirlockd(1)'s EXIT STATUS: run's, and those every
// command shares; each command's page gives its own.
var exitStatuses = []struct {
	code    string
	meaning string
}{
	{"0", "success; for run, the server exited 0"},
	{"1\u20134", "check, status, stop and wait: the state found (see their pages)"},
	{fmt.Sprint(exitcode.Usage), "usage error"},
	{fmt.Sprint(exitUnavailable), "run and stress with --etcd: etcd unavailable; the server never started"},
	{fmt.Sprint(exitcode.Internal), "internal error"},
	{fmt.Sprint(exitcode.Held), "run: the data directory is held by a live instance (--conflict-exit-code changes it), or with --etcd the lease key by another holder"},
	{fmt.Sprint(exitcode.Orphans), "run: orphaned processes of a dead holder survive"},
	{fmt.Sprint(exitcode.Invalid), "run: invalid data directory, pidfile or configuration, host-local locks on shared storage, or a full or read-only filesystem; with --etcd, a lease key of another tool, no permission on it, or a fencing token below the fence file's"},
	{fmt.Sprint(exitcode.NoExec), "run: COMMAND is not executable"},
	{fmt.Sprint(exitcode.NotFound), "run: COMMAND not found"},
	{fmt.Sprintf("%d+N", exitcode.SignalBase), "run: the server's main process was killed by signal N; otherwise run exits with its status"},
}

// manEnvironment is dirlockd(1)'s ENVIRONMENT.
var manEnvironment = []struct{ name, meaning string }{
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
	for _, e := range exitStatuses {
		fmt.Fprintf(&b, "**%s**\n: %s\n\n", e.code, mdEscape(e.meaning))
	}
	b.WriteString("# ENVIRONMENT\n\n")
	for _, e := range manEnvironment {
		fmt.Fprintf(&b, "**%s**\n: %s\n\n", e.name, mdEscape(e.meaning))
	}
	b.WriteString("# FILES\n\n")
	fmt.Fprintf(&b, "*DIR*/%s\n: %s\n\n", mdEscape(globalFlags().Lookup("pidfile").DefValue),
		mdEscape("the locked pidfile and its record (--pidfile names it). dirlockd never unlinks it: a removed pidfile would let a second holder lock a new file while the first still runs."))
	fmt.Fprintf(&b, "*DIR*/%s\n: %s\n\n", mdEscape(fenceFileName(globalFlags().Lookup("pidfile").DefValue)),
		mdEscape("with run --etcd, the highest fencing token that ever ran in the directory: a start with a lower one is refused."))
	fmt.Fprintf(&b, "%s\n: %s\n\n", mdEscape("/usr/lib/systemd/system/dirlockd@.service"),
		mdEscape("the systemd unit template: dirlockd@NAME.service runs the server that /etc/dirlockd/NAME.conf names, under dirlockd run."))
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
	see = append(see, "**flock**(1)", "**start-stop-daemon**(8)", "**systemd.service**(5)", "**sd_notify**(3)")
	b.WriteString(strings.Join(see, ", ") + "\n")
	return b.String()
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
	if fs := c.flags(); fs.HasAvailableFlags() {
		b.WriteString("# OPTIONS\n\n")
		flagList(&b, fs)
	}
	fmt.Fprintf(&b, "# EXAMPLES\n\n```\n%s```\n\n# SEE ALSO\n\n**dirlockd**(1)\n", c.examples)
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
