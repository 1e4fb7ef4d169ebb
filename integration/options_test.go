package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestRunOptionsEndAtCommand: run's flags end at COMMAND, as flock(1),
// env(1) and sudo's do; what follows COMMAND is COMMAND's, -D included.
func TestRunOptionsEndAtCommand(t *testing.T) {
	e1, e2 := testutil.DataDir(t), testutil.DataDir(t)
	out := filepath.Join(t.TempDir(), "argv")
	// The server records its arguments and the directory it was given.
	code, _, stderr := dirlockd(t, "run", "-D", e1, "sh", "-c", `printf "%s|" "$DIRLOCKD_DATADIR" "$@" >"$0"`, out, "-D", e2, "--port", "6399")
	if code != 0 {
		t.Fatalf("run -D e1 sh -c ... -D e2: exit %d\n%s", code, stderr)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := e1 + "|-D|" + e2 + "|--port|6399|"; string(got) != want {
		t.Errorf("the server got DIRLOCKD_DATADIR and argv %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(e2, "dirlockd.pid")); !os.IsNotExist(err) {
		t.Errorf("run -D e1 COMMAND -D e2 touched e2: %v", err)
	}
	// "--" still ends the flags, and a "--" after COMMAND is COMMAND's.
	code, stdout, stderr := dirlockd(t, "run", "-D", e1, "--log-level", "warn", "--", "echo", "-D", "x", "--", "y")
	if code != 0 || stdout != "-D x -- y\n" {
		t.Errorf("run -D e1 -- echo -D x -- y: exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	// A flag of the server's before COMMAND: a usage error that says
	// where it goes.
	for _, args := range [][]string{
		{"run", "-D", e1, "--port", "6399", "redis-server"},
		{"run", "-D", e1, "-p", "6399", "redis-server"},
	} {
		code, stdout, stderr := dirlockd(t, args...)
		if code != exitcode.Usage || stdout != "" || !strings.Contains(stderr, `did you mean "-- COMMAND `+args[3]+` ..."?`) {
			t.Errorf("dirlockd %q: exit %d, stdout %q, stderr %q; want %d and a hint to put COMMAND's flags after --", args, code, stdout, stderr, exitcode.Usage)
		}
	}
}
