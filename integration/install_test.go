package integration

// Tests of what installs dirlockd beside the system's tools: the version
// make build links in, the man pages, the shell completions, the systemd
// unit template, make install and make deb.

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// makeTarget runs make in the repository root with vars and fails the test
// if it fails.
func makeTarget(t *testing.T, target string, vars ...string) string {
	t.Helper()
	out, err := exec.Command("make", append([]string{"-s", "-C", "..", target}, vars...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s %v: %v\n%s", target, vars, err, out)
	}
	return string(out)
}

// TestVersion: make build links in git describe's version; version and
// --version print it with the Go toolchain.
func TestVersion(t *testing.T) {
	b := filepath.Join(t.TempDir(), "dirlockd")
	makeTarget(t, "build", "BIN="+b)
	desc, err := exec.Command("git", "-C", "..", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Fatalf("git describe: %v", err)
	}
	want := "dirlockd " + strings.TrimSpace(string(desc)) + " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(b, arg).Output()
		if err != nil || string(out) != want {
			t.Errorf("make build; dirlockd %s: %q, %v; want %q", arg, out, err, want)
		}
	}
	// The tests' own build has no linked version: the build info's, and
	// the same toolchain.
	code, out, stderr := dirlockd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "dirlockd ") || !strings.Contains(out, "("+runtime.Version()+" ") || stderr != "" {
		t.Errorf("dirlockd version (go build): exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
