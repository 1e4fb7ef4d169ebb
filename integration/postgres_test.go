package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
)

// asPostgres prepares name with args to run as the postgres user, which
// PostgreSQL insists on (it refuses to run as root).
func asPostgres(t *testing.T, u *user.User, name string, args ...string) *exec.Cmd {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = append(os.Environ(), "HOME="+u.HomeDir)
	return cmd
}

// TestPostgresPgCtl wraps PostgreSQL the way its own tooling starts it:
// pg_ctl start forks the postmaster, waits for it and exits. With
// --main-pid-file naming postmaster.pid, dirlockd takes the postmaster as
// the main process, keeps the directory while it runs, stops it on
// "dirlockd stop", and marks the record stopped once its whole tree (the
// postmaster and its backends) is gone.
func TestPostgresPgCtl(t *testing.T) {
	pgBins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(pgBins) == 0 {
		t.Fatal("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
	}
	pgBin := filepath.Dir(pgBins[len(pgBins)-1])
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("no postgres user: %v", err)
	}
	root, dl := userScratch(t, u)
	data := filepath.Join(root, "data")
	if out, err := asPostgres(t, u, filepath.Join(pgBin, "initdb"), "-D", data, "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := strconv.Itoa(testutil.FreePort(t))
	run := asPostgres(t, u, dl, "run", "-D", data, "--main-pid-file", filepath.Join(data, "postmaster.pid"), "--",
		filepath.Join(pgBin, "pg_ctl"), "start", "-w", "-D", data, "-l", filepath.Join(root, "pg.log"),
		"-o", "-p "+port+" -k "+root+" -c listen_addresses=")
	w := testutil.StartLogged(t, run)
	killTreeAtEnd(t, w)
	status := func() testutil.Report {
		out, _ := asPostgres(t, u, dl, "status", "--json", "-D", data).Output()
		var r testutil.Report
		json.Unmarshal(out, &r)
		return r
	}
	var r testutil.Report
	testutil.Eventually(t, 60*time.Second, "the postmaster as the main process", func() bool {
		r = status()
		return r.State == "held" && r.MainPID > 0 && r.MainPID != r.ChildPID && !testutil.Alive(r.ChildPID)
	})
	pm, _ := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if first, _, _ := strings.Cut(string(pm), "\n"); first != strconv.Itoa(r.MainPID) {
		t.Errorf("main PID %d, postmaster.pid says %q", r.MainPID, first)
	}
	out, err := asPostgres(t, u, filepath.Join(pgBin, "psql"), "-h", root, "-p", port, "-d", "postgres", "-Atc", "select 42").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Errorf("psql: %v: %s", err, out)
	}
	backends := testutil.Descendants(r.MainPID)
	if len(backends) == 0 {
		t.Errorf("the postmaster (PID %d) has no children: not the PostgreSQL expected", r.MainPID)
	}
	if out, err := asPostgres(t, u, dl, "stop", "-D", data, "--timeout", "60s").CombinedOutput(); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if code := w.WaitExit(t, 60*time.Second); code != 0 {
		t.Errorf("wrapper exit %d, want the postmaster's 0; stderr:\n%s", code, w.Stderr())
	}
	for _, p := range append(backends, r.MainPID) {
		if testutil.Alive(p) {
			t.Errorf("PID %d of PostgreSQL's tree survived the stop", p)
		}
	}
	if rec := recordOf(t, data); rec.Status != pidfile.Stopped {
		t.Errorf("record status %q after the stop", rec.Status)
	}
	t.Logf("postmaster %d with %d children; stopped cleanly", r.MainPID, len(backends))
}
