// Command dirlockd guarantees that exactly one server process tree works in a
// data directory.
//
// This first version has two subcommands: hold acquires the data directory
// and holds it until SIGTERM or SIGINT, and inspect reports its state without
// taking it. Run "dirlockd --help" for details.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/pidfile"
)

// Exit codes, from sysexits(3) where one fits.
const (
	exitOK       = 0
	exitHeld     = 75 // EX_TEMPFAIL: held by a live instance
	exitOrphans  = 76 // blocked by orphaned processes
	exitInternal = 70 // EX_SOFTWARE
	exitInvalid  = 78 // EX_CONFIG: invalid data directory or pidfile
	exitUsage    = 64 // EX_USAGE
)

const usage = `dirlockd guarantees that exactly one server process tree works in a data directory.

Usage:
  dirlockd hold -D DIR [flags]      acquire DIR and hold it until SIGTERM or SIGINT
  dirlockd inspect -D DIR [flags]   report whether DIR is free, stale, held or orphaned

Run "dirlockd COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "hold":
		return hold(args[1:], stdout, stderr)
	case "inspect":
		return inspect(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "dirlockd: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

type common struct {
	dir    string
	opts   interlock.Options
	method string
}

func newFlags(name, summary, example string, c *common, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVarP(&c.dir, "datadir", "D", os.Getenv("DIRLOCKD_DATADIR"), "data directory (default $DIRLOCKD_DATADIR)")
	fs.StringVar(&c.opts.Pidfile, "pidfile", pidfile.DefaultName, "pidfile name inside the data directory")
	fs.StringVar(&c.method, "lock-method", "auto", "lock method: auto, flock, ofd or posix")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nUsage:\n  dirlockd %s -D DIR [flags]\n\nFlags:\n%s\nExample:\n  %s\n",
			summary, name, fs.FlagUsages(), example)
	}
	return fs
}

func (c *common) parse(fs *pflag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, false
		}
		fmt.Fprintf(stderr, "dirlockd %s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dirlockd %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	if c.dir == "" {
		fmt.Fprintf(stderr, "dirlockd %s: no data directory: pass -D DIR or set DIRLOCKD_DATADIR\n", fs.Name())
		return exitUsage, false
	}
	m, err := pidfile.ParseMethod(c.method)
	if err != nil {
		fmt.Fprintf(stderr, "dirlockd %s: --lock-method: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	c.opts.LockMethod = m
	return 0, true
}

func hold(args []string, stdout, stderr io.Writer) int {
	var c common
	fs := newFlags("hold", "Acquire the data directory and hold it until SIGTERM or SIGINT, then release it.",
		"dirlockd hold -D /var/lib/demo --wait 10s", &c, stderr)
	fs.DurationVar(&c.opts.Wait, "wait", 0, "how long to wait for a held data directory (0: fail at once)")
	if code, ok := c.parse(fs, args, stderr); !ok {
		return code
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sigs; cancel() }()

	l, err := interlock.Acquire(ctx, c.dir, c.opts)
	if err != nil {
		fmt.Fprintf(stderr, "dirlockd hold: %v\n", err)
		return exitCode(err)
	}
	if p := l.Previous(); p != nil && !p.Clean() {
		fmt.Fprintf(stderr, "dirlockd hold: %s\n", p)
	}
	if err := l.Update(func(r *pidfile.Record) { r.Status = pidfile.Ready }); err != nil {
		fmt.Fprintf(stderr, "dirlockd hold: %v\n", err)
		l.Release()
		return exitInternal
	}
	r := l.Record()
	fmt.Fprintf(stdout, "holding %s: pid=%d lock_method=%s shm_key=0x%08x shm_id=%d token=%s\n",
		r.DataDir, r.PID, r.LockMethod, uint32(r.ShmKey), r.ShmID, r.Token)
	<-ctx.Done()
	if err := l.Release(); err != nil {
		fmt.Fprintf(stderr, "dirlockd hold: release: %v\n", err)
		return exitInternal
	}
	fmt.Fprintf(stdout, "released %s\n", r.DataDir)
	return exitOK
}

func inspect(args []string, stdout, stderr io.Writer) int {
	var c common
	fs := newFlags("inspect", "Report whether the data directory is free, stale, held or held by orphans, without taking it.",
		"dirlockd inspect -D /var/lib/demo", &c, stderr)
	if code, ok := c.parse(fs, args, stderr); !ok {
		return code
	}
	rep, err := interlock.Inspect(c.dir, c.opts)
	if err != nil {
		fmt.Fprintf(stderr, "dirlockd inspect: %v\n", err)
		return exitCode(err)
	}
	fmt.Fprintf(stdout, "%s: %s\n", rep.State, rep.Message())
	if rep.Err != nil {
		return exitCode(rep.Err)
	}
	return exitOK
}

func exitCode(err error) int {
	switch {
	case errors.Is(err, interlock.ErrHeld):
		return exitHeld
	case errors.Is(err, interlock.ErrOrphans):
		return exitOrphans
	case errors.Is(err, interlock.ErrInvalid), errors.Is(err, interlock.ErrUnsupported):
		return exitInvalid
	}
	return exitInternal
}
