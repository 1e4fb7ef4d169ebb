package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDeps: .ci/deps, which make test, bench and torture run first, finds
// nothing missing on a machine set up for the tests (and then runs no
// apt-get at all); with one tool gone from PATH it names that package in
// the one apt-get line a user runs, and as root (install) it runs apt-get
// update and installs exactly that package. The apt-get it runs is a
// recorder first on PATH: the test must not change the machine's packages.
func TestDeps(t *testing.T) {
	script, err := filepath.Abs("../.ci/deps")
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	// Every COMMAND:PACKAGE the script checks, and what it runs itself.
	list := regexp.MustCompile(`(?s)\npackages=\((.*?)\)`).FindSubmatch(body)
	if list == nil {
		t.Fatal(".ci/deps has no packages=(...) list")
	}
	entries := regexp.MustCompile(`([a-z0-9_-]+):([a-z0-9-]+)`).FindAllStringSubmatch(string(list[1]), -1)
	if len(entries) < 15 {
		t.Fatalf(".ci/deps lists %d COMMAND:PACKAGE entries; want the whole list", len(entries))
	}
	commands := []string{"awk", "ls", "printf", "go", "id"}
	for _, e := range entries {
		commands = append(commands, e[1])
	}
	// A PATH holding each of them but without, maybe, one; and apt-get,
	// a script that records its arguments.
	fakePath := func(without string) (dir, log string) {
		// In /tmp itself, not in the suite's private temporary directory:
		// the unprivileged user of make deps below must search it.
		dir, err := os.MkdirTemp("/tmp", "dirlockd-deps-path")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		log = filepath.Join(dir, "apt-get.log")
		for _, c := range commands {
			if c == without {
				continue
			}
			// The system's own first: the unprivileged user below may not
			// reach root's (a pyenv shim in /root).
			real := ""
			for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
				if fi, err := os.Stat(filepath.Join(d, c)); err == nil && fi.Mode()&0o111 != 0 {
					real = filepath.Join(d, c)
					break
				}
			}
			var err error
			if real == "" {
				real, err = exec.LookPath(c)
			}
			if err != nil {
				t.Fatalf("%s is not installed: run .ci/deps install as root first", c)
			}
			if err := os.Symlink(real, filepath.Join(dir, c)); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
		rec := "#!/bin/bash\necho \"$*\" >> " + log + "\n"
		if err := os.WriteFile(filepath.Join(dir, "apt-get"), []byte(rec), 0o755); err != nil {
			t.Fatal(err)
		}
		return dir, log
	}
	deps := func(path, mode string) (int, string) {
		cmd := exec.Command("bash", script, mode)
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	aptCalls := func(log string) string {
		b, err := os.ReadFile(log)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return string(b)
	}

	full, log := fakePath("")
	if code, out := deps(full, "check"); code != 0 || out != "" {
		t.Fatalf(".ci/deps check with everything present: exit %d, output %q; want 0 and nothing", code, out)
	}
	if code, out := deps(full, "install"); code != 0 || out != "" || aptCalls(log) != "" {
		t.Errorf(".ci/deps install with everything present: exit %d, output %q, apt-get %q; want nothing run", code, out, aptCalls(log))
	}

	noZsh, log := fakePath("zsh")
	code, out := deps(noZsh, "check")
	if code != 1 || !strings.Contains(out, "  apt-get update && apt-get install -y --no-install-recommends zsh\n") {
		t.Errorf(".ci/deps check without zsh: exit %d, want 1 and the apt-get line:\n%s", code, out)
	}
	if aptCalls(log) != "" {
		t.Errorf(".ci/deps check ran apt-get: %q", aptCalls(log))
	}
	if code, out := deps(noZsh, "install"); code != 0 || aptCalls(log) != "update -qq\ninstall -y -qq --no-install-recommends zsh\n" {
		t.Errorf(".ci/deps install without zsh: exit %d, output %q, apt-get ran %q; want update, then install of zsh alone", code, out, aptCalls(log))
	}

	// make test as a user who is not root stops at once, before any test,
	// with the same line.
	if os.Getuid() == 0 {
		makeCmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "make", "-s", "-C", "..", "deps")
		makeCmd.Env = append(os.Environ(), "PATH="+noZsh)
		out, err := makeCmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "apt-get install -y --no-install-recommends zsh") {
			t.Errorf("make deps as nobody without zsh: %v, want a failure naming the apt-get line:\n%s", err, out)
		}
	}
}
