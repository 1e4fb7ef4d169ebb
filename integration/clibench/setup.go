package main

// The directories and processes the benchmark runs against, and their
// removal.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// setup makes the directories of every case: one cleanly released, one held
// by a live `run -- sleep`, one whose holder and server were SIGKILLed (the
// record says ready, nobody is left), 1000 of which half were released once
// and half never used, and one for run.
func (b *bench) setup() error {
	b.lockfile = filepath.Join(b.root, "lockfile")
	if err := os.WriteFile(b.lockfile, nil, 0o600); err != nil {
		return err
	}
	quiet := []string{"--log-level", "error"}
	clean := b.dir("clean")
	if out, err := b.dl(append(append([]string{"run", "-D", clean}, quiet...), "--", "true")...).CombinedOutput(); err != nil {
		return fmt.Errorf("run in %s: %v: %s", clean, err, out)
	}
	crashed := b.dir("crashed")
	if err := b.crash(crashed); err != nil {
		return err
	}
	held := b.dir("held")
	b.held = b.dl(append(append([]string{"run", "-D", held}, quiet...), "--", "sleep", "3600")...)
	if err := b.held.Start(); err != nil {
		return err
	}
	if err := pollExit(b.dl("check", "-D", held), 1); err != nil {
		return fmt.Errorf("held directory never held: %w", err)
	}
	var many []string
	for i := range 1000 {
		d := b.dir(fmt.Sprintf("m%04d", i))
		many = append(many, "-D", d)
		if i < 500 {
			if out, err := b.dl(append(append([]string{"run", "-D", d}, quiet...), "--", "true")...).CombinedOutput(); err != nil {
				return fmt.Errorf("run in %s: %v: %s", d, err, out)
			}
		}
	}
	run := b.dir("run")
	b.argv = map[string][]string{
		"check_clean":   {"check", "-D", clean},
		"check_held":    {"check", "-D", held},
		"check_crashed": {"check", "-D", crashed},
		"run_true":      append(append([]string{"run", "-D", run}, quiet...), "--", "true"),
		"check_1000":    append([]string{"check"}, many...),
	}
	return nil
}

// crash leaves dir as a holder killed with SIGKILL leaves it: the wrapper
// and its server are killed, the record is not stopped, nobody survives.
func (b *bench) crash(dir string) error {
	c := b.dl("run", "-D", dir, "--log-level", "error", "--", "sleep", "3600")
	if err := c.Start(); err != nil {
		return err
	}
	pidfile := filepath.Join(dir, "dirlockd.pid")
	child := 0
	for deadline := time.Now().Add(30 * time.Second); child == 0 && time.Now().Before(deadline); {
		raw, _ := os.ReadFile(pidfile)
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "child_pid="); ok {
				fmt.Sscan(v, &child)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Process.Kill()
	c.Wait()
	if child == 0 {
		return fmt.Errorf("%s: no child_pid in the record", dir)
	}
	syscall.Kill(child, syscall.SIGKILL)
	// The server is our grandchild: it is gone once its PID is (the
	// reaper, init or a subreaper, collects it).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if syscall.Kill(child, 0) != nil {
			return pollExit(b.dl("check", "-D", dir), 0)
		}
	}
	return fmt.Errorf("server PID %d outlived SIGKILL", child)
}

func pollExit(c *exec.Cmd, want int) error {
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		cc := exec.Command(c.Path, c.Args[1:]...)
		out, _ := cc.CombinedOutput()
		if cc.ProcessState.ExitCode() == want {
			return nil
		}
		last = string(out)
	}
	return fmt.Errorf("%v: never exit %d: %s", c.Args, want, last)
}

func (b *bench) startSleepers(n int) error {
	for range n {
		c := exec.Command("sleep", "3600")
		if err := c.Start(); err != nil {
			return fmt.Errorf("start idle process %d of %d: %w", len(b.sleepers)+1, n, err)
		}
		b.sleepers = append(b.sleepers, c)
	}
	return nil
}

// stopSleepers ends the idle processes by the PIDs it started.
func (b *bench) stopSleepers() {
	for _, c := range b.sleepers {
		c.Process.Kill()
	}
	for _, c := range b.sleepers {
		c.Wait()
	}
	b.sleepers = nil
}

func (b *bench) cleanup() {
	b.stopSleepers()
	if b.held != nil && b.held.Process != nil {
		b.held.Process.Signal(syscall.SIGTERM)
		b.held.Wait()
		b.held = nil
	}
	if b.root != "" {
		// Take the crashed directory over once, so that the segment its
		// holder left is reclaimed and no SysV segment leaks.
		exec.Command(b.bin, "run", "-D", filepath.Join(b.root, "crashed"), "--log-level", "error", "--", "true").Run()
		os.RemoveAll(b.root)
		b.root = ""
	}
}
