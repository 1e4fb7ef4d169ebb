// Command dirlockd guarantees that exactly one server process tree works in a
// data directory.
//
// Operators wrap a server with "dirlockd run -D DIR -- server ARGS"; boot
// scripts ask "dirlockd check -D DIR" whether a start is safe; "status",
// "stop" and "wait" serve init scripts and humans. Run "dirlockd --help".
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/cli"
	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/lease"
	"github.com/dirlockd/dirlockd/internal/printable"
	"github.com/dirlockd/dirlockd/pidfile"
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage(cmds))
		return exitcode.Usage
	}
	switch name := args[0]; name {
	case "-h", "--help", "help":
		// "dirlockd help COMMAND" is "dirlockd COMMAND --help".
		if name == "help" && len(args) == 2 {
			if c := lookup(cmds, args[1]); c != nil {
				return c.main([]string{"--help"}, stdout, stderr)
			}
		}
		fmt.Fprint(stdout, usage(cmds))
		return 0
	case "-V", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case cli.CompleteCommand:
		completer(cmds).Answer(stdout, args[1:])
		return 0
	case lease.WatchdogCommand:
		return lease.WatchdogMain(args[1:], stdout, stderr)
	case manCommand:
		if man := manGenerator(); man != nil {
			return man(cmds, args[1:], stderr)
		}
	}
	if c := lookup(cmds, args[0]); c != nil {
		return c.main(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "dirlockd: unknown command %q%s\n\n%s", args[0], didYouMean(args[0], cmds), usage(cmds))
	return exitcode.Usage
}

// didYouMean is what "unknown command" adds for a mistyped command name:
// `; did you mean "check"?`, or "".
func didYouMean(typed string, cmds []*subcommand) string {
	names := []string{"help", "--help", "--version"}
	for _, c := range cmds {
		names = append(names, c.name)
	}
	if s := cli.Suggest(typed, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// globals are the flags every command takes.
type globals struct {
	dirs      []string
	pidfile   string
	method    string
	logFormat string
	logLevel  string
	command   bool // a COMMAND follows the flags (run: doc.exec)

	opts  interlock.Options
	log   *slog.Logger
	usage func(io.Writer)
}

// command builds a command's flag set with the global flags, and the help
// that --help prints from them.
func command(d *doc, g *globals, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(d.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	if d.exec {
		// As flock(1), env(1), sudo and systemd-run do, dirlockd's flags
		// end at COMMAND, the first word that is not one: what follows is
		// COMMAND's, "-D" and all.
		fs.SetInterspersed(false)
		g.command = true
	}
	if d.multiDir {
		fs.StringArrayVarP(&g.dirs, "datadir", "D", nil, "data directories (default $DIRLOCKD_DATADIR)")
		cli.Detail(fs, "datadir", "Repeat -D for several.")
	} else {
		g.dirs = make([]string, 1)
		fs.StringVarP(&g.dirs[0], "datadir", "D", "", "data directory (default $DIRLOCKD_DATADIR)")
	}
	cli.CompleteDirs(fs, "datadir")
	fs.StringVar(&g.pidfile, "pidfile", pidfile.DefaultName, "file name in DIR")
	cli.Detail(fs, "pidfile", "A file name, without /: every holder of the directory must use the same.")
	fs.StringVar(&g.method, "lock-method", "auto", "auto, flock, ofd or posix")
	cli.Detail(fs, "lock-method", "auto takes flock where the filesystem keeps it, else OFD locks (fcntl); every holder of a directory, on every host, must use the same method.")
	cli.CompleteValues(fs, "lock-method", "auto", "flock", "ofd", "posix")
	fs.BoolVar(&g.opts.AllowLocalLocks, "allow-local-locks", false, "accept host-local locks on shared storage")
	cli.Detail(fs, "allow-local-locks", "Such are NFS mounted nolock or local_lock=, CIFS nobrl: use it only if no other host mounts the filesystem.")
	fs.StringVar(&g.logFormat, "log-format", "auto", "auto, text, logfmt or json")
	cli.Detail(fs, "log-format", "auto is text on a terminal, else logfmt.")
	cli.CompleteValues(fs, "log-format", "auto", "text", "logfmt", "json")
	fs.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	cli.CompleteValues(fs, "log-level", "debug", "info", "warn", "error")
	// Help goes to stdout when asked for (parse prints it); a bad command
	// line gets one line on stderr saying what is wrong, not the whole help.
	fs.Usage = func() {}
	g.usage = func(w io.Writer) { d.help(w, fs) }
	return fs
}

// errUsage marks a command line that cannot be obeyed; parse has already
// said why.
var errUsage = errors.New("usage")

// parse parses args and settles the global flags. It returns the positional
// arguments. A nil error with help requested is reported as pflag.ErrHelp.
func (g *globals) parse(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) ([]string, error) {
	fail := func(format string, a ...any) ([]string, error) {
		usageError(stderr, fs.Name(), format, a...)
		return nil, errUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			g.usage(stdout)
			return nil, err
		}
		if s := cli.SuggestFlag(fs, err); s != "" {
			return fail("%v (did you mean --%s?)", err, s)
		}
		if flag, ok := cli.UnknownFlag(err); ok && g.command {
			// Most likely the server's flag, before a COMMAND with no "--".
			return fail("%v: if it is COMMAND's, did you mean \"-- COMMAND %s ...\"? dirlockd's flags go before COMMAND, COMMAND's after it", err, flag)
		}
		return fail("%v", err)
	}
	g.dirs = slices.DeleteFunc(g.dirs, func(d string) bool { return d == "" })
	if len(g.dirs) == 0 {
		if env := os.Getenv("DIRLOCKD_DATADIR"); env != "" {
			g.dirs = []string{env}
		} else {
			return fail("no data directory: pass -D DIR or set DIRLOCKD_DATADIR")
		}
	}
	m, err := pidfile.ParseMethod(g.method)
	if err != nil {
		return fail("--lock-method: %v", err)
	}
	if g.pidfile == "" || strings.ContainsRune(g.pidfile, '/') {
		return fail("--pidfile %q: want a file name inside the data directory, without /", g.pidfile)
	}
	g.opts.Pidfile, g.opts.LockMethod = g.pidfile, m
	if g.log, err = cli.NewLogger(g.logFormat, g.logLevel, stderr); err != nil {
		return fail("%v", err)
	}
	return fs.Args(), nil
}

// usageError says on stderr, in one line, what is wrong with a command line
// of cmd, and returns exitcode.Usage.
func usageError(stderr io.Writer, cmd, format string, a ...any) int {
	fmt.Fprintf(stderr, "dirlockd %s: %s\nRun \"dirlockd %s --help\" for usage.\n", cmd, printable.String(fmt.Sprintf(format, a...)), cmd)
	return exitcode.Usage
}

// floor is the shortest value a duration flag takes. Below it an interval
// makes a loop spin (--recheck 1ns burnt 2.5 s of CPU in 3 s) or a timeout
// expires before what it bounds can happen: a mistyped unit, never a
// setting anyone means. off says what 0 means for a flag that takes it
// ("": 0 is below the floor too).
type floor struct {
	flag string
	min  time.Duration
	off  string
}

// checkFloors refuses a duration flag of fs set below its floor, naming the
// floor.
func checkFloors(fs *pflag.FlagSet, floors ...floor) error {
	for _, f := range floors {
		d, err := fs.GetDuration(f.flag)
		switch {
		case err != nil:
			panic(err) // a floor for a flag the command lacks
		case d == 0 && f.off != "":
		case d < 0:
			return fmt.Errorf("--%s %v: must not be negative", f.flag, d)
		case d < f.min && f.off != "":
			return fmt.Errorf("--%s %v: below the floor of %v (0: %s)", f.flag, d, f.min, f.off)
		case d < f.min:
			return fmt.Errorf("--%s %v: below the floor of %v", f.flag, d, f.min)
		}
	}
	return nil
}

// invalidStorage reports whether err is the data directory's condition, not
// dirlockd's failure: an unfit directory or pidfile, a filesystem that takes
// no lock or keeps it local, a full or read-only filesystem.
func invalidStorage(err error) bool {
	return errors.Is(err, interlock.ErrInvalid) || errors.Is(err, interlock.ErrUnsupported) ||
		errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EROFS)
}

// exitFor maps a parse error to an exit code.
func exitFor(err error) int {
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	return exitcode.Usage
}
