package integration

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// userScratch makes a scratch directory under /tmp that u owns (the tests'
// own temporary directories are private to root), with a copy of dirlockd
// in it that u can execute. Both go when the test ends.
func userScratch(t *testing.T, u *user.User) (root, dl string) {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "dl18-"+u.Username+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(root, uid, gid); err != nil {
		t.Fatal(err)
	}
	dl = filepath.Join(root, "dirlockd")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dl, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root, dl
}

// serviceUser looks up a system user that a Debian package creates.
func serviceUser(t *testing.T, name, pkg string) *user.User {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("no %s user: %v (apt-get install %s; .ci/run does)", name, err, pkg)
	}
	return u
}

// testUser creates an unprivileged user (testutil.NewUser), removed when
// the test ends.
func testUser(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Lookup(testutil.NewUser(t, "dloperator").Name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// statusOf runs "dl status --json -D dir" as root and returns its exit code
// and report.
func statusOf(t *testing.T, dl, dir string) (int, testutil.Report) {
	t.Helper()
	cmd := exec.Command(dl, "status", "--json", "-D", dir)
	out, err := cmd.Output()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	r, perr := testutil.ParseReport(string(out))
	if perr != nil {
		t.Fatalf("status --json -D %s: %q: %v", dir, out, perr)
	}
	return cmd.ProcessState.ExitCode(), r
}

// runAs runs dl ARGS as u (nil: root) and returns its exit code and output.
func runAs(t *testing.T, u *user.User, dl string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(dl, args...)
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// procUID is the effective uid of pid.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 1 {
				return f[1]
			}
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return ""
}

// fileOwner is the uid owning path.
func fileOwner(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(int(st.Uid))
}

// TestPostgresAsOperator runs PostgreSQL the way an operator's boot script
// would, as root: run --user postgres, postgres -D (no pg_ctl) with
// --ready-notify and --stop-signal INT (fast shutdown), dirlockd reload
// after ALTER SYSTEM (SHOW sees the new value only after a reload), then
// stop by root. A second start has its wrapper SIGKILLed: status says
// "unsupervised" (151) while PostgreSQL serves on, and a plain stop stops
// the postmaster with the recorded SIGINT.
func TestPostgresAsOperator(t *testing.T) {
	pgBins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(pgBins) == 0 {
		t.Fatal("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
	}
	pgBin := filepath.Dir(pgBins[len(pgBins)-1])
	u := serviceUser(t, "postgres", "postgresql")
	root, dl := userScratch(t, u)
	data := filepath.Join(root, "data")
	if out, err := asPostgres(t, u, filepath.Join(pgBin, "initdb"), "-D", data, "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := strconv.Itoa(testutil.FreePort(t))
	psql := func(sql string) (string, error) {
		out, err := asPostgres(t, u, filepath.Join(pgBin, "psql"), "-h", root, "-p", port, "-d", "postgres", "-Atc", sql).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	start := func() *testutil.Proc {
		// As root: dirlockd becomes postgres before it opens anything.
		w := testutil.StartLogged(t, exec.Command(dl, "run", "-D", data, "--user", "postgres", "--ready-notify", "--stop-signal", "INT",
			filepath.Join(pgBin, "postgres"), "-D", data, "-p", port, "-k", root, "-c", "listen_addresses="))
		killTreeAtEnd(t, w)
		var r testutil.Report
		testutil.Eventually(t, 60*time.Second, "PostgreSQL ready (READY=1)", func() bool {
			_, r = statusOf(t, dl, data)
			return r.Status == "ready" || !w.Alive()
		})
		if !w.Alive() {
			t.Fatalf("run exited %d:\n%s", w.ExitCode(), w.Stderr())
		}
		return w
	}

	w := start()
	code, r := statusOf(t, dl, data)
	if code != exitcode.StatusRunning || r.Service != "running" {
		t.Errorf("status as root of a directory postgres owns: exit %d, service %q; want 0, running", code, r.Service)
	}
	if got := procUID(t, r.PID); got != u.Uid {
		t.Errorf("dirlockd run --user postgres runs as uid %s, want %s", got, u.Uid)
	}
	if got := procUID(t, r.MainPID); got != u.Uid {
		t.Errorf("postgres runs as uid %s, want %s", got, u.Uid)
	}
	if got := fileOwner(t, filepath.Join(data, "dirlockd.pid")); got != u.Uid {
		t.Errorf("the pidfile belongs to uid %s, want postgres's %s", got, u.Uid)
	}
	if v, err := psql("SHOW work_mem"); err != nil || v != "4MB" {
		t.Fatalf("SHOW work_mem: %q, %v; want the default 4MB", v, err)
	}
	if v, err := psql("ALTER SYSTEM SET work_mem = '7MB'"); err != nil {
		t.Fatalf("ALTER SYSTEM: %q, %v", v, err)
	}
	if code, out := runAs(t, nil, dl, "reload", "-D", data); code != 0 {
		t.Fatalf("reload as root: exit %d\n%s", code, out)
	}
	testutil.Eventually(t, 30*time.Second, "SHOW work_mem to say 7MB after dirlockd reload", func() bool {
		v, _ := psql("SHOW work_mem")
		return v == "7MB"
	})
	if code, out := runAs(t, nil, dl, "stop", "-D", data, "--timeout", "60s"); code != 0 {
		t.Fatalf("stop as root: exit %d\n%s", code, out)
	}
	if code := w.WaitExit(t, 60*time.Second); code != 0 {
		t.Errorf("run exit %d, want the postmaster's 0:\n%s", code, w.Stderr())
	}
	log := w.Stderr()
	for _, want := range []string{"received SIGHUP, reloading configuration files", "received fast shutdown request", "database system is shut down"} {
		if !strings.Contains(log, want) {
			t.Errorf("PostgreSQL's log lacks %q:\n%s", want, log)
		}
	}
	if code, r := statusOf(t, dl, data); code != exitcode.StatusNotRunning || r.Service != "stopped" {
		t.Errorf("status after stop: exit %d, service %q; want 3, stopped", code, r.Service)
	}

	// The wrapper dies; PostgreSQL serves on, unsupervised.
	w = start()
	_, r = statusOf(t, dl, data)
	postmaster := r.MainPID
	killWait(t, w.PID())
	if v, err := psql("SELECT 42"); err != nil || v != "42" {
		t.Fatalf("PostgreSQL after its wrapper's death: %q, %v", v, err)
	}
	code, r = statusOf(t, dl, data)
	if code != exitcode.StatusUnsupervised || r.Service != "unsupervised" || r.MainPID != postmaster {
		t.Errorf("status with the wrapper dead and PostgreSQL serving: exit %d, service %q, main %d; want %d, unsupervised, %d",
			code, r.Service, r.MainPID, exitcode.StatusUnsupervised, postmaster)
	}
	if code, out := runAs(t, nil, dl, "stop", "-D", data, "--timeout", "60s"); code != 0 || !strings.Contains(out, "signal=SIGINT") {
		t.Fatalf("stop of the unsupervised server: exit %d, want 0 with its recorded SIGINT\n%s", code, out)
	}
	if testutil.Alive(postmaster) {
		t.Errorf("the postmaster %d survived the stop", postmaster)
	}
	if code, r := statusOf(t, dl, data); code != exitcode.StatusDead || r.Service != "dead" {
		t.Errorf("status after the unsupervised stop: exit %d, service %q; want 1, dead (no clean release)", code, r.Service)
	}
	// The next start reclaims the dead holder's segment, as after any
	// crash.
	if code, out := runAs(t, nil, dl, "run", "-D", data, "--user", "postgres", "true"); code != 0 {
		t.Errorf("a start after the unsupervised stop: exit %d\n%s", code, out)
	}
}

// TestMariaDBSafe runs MariaDB the way its own script starts it: under
// mysqld_safe, which ignores SIGTERM (trap ” 15) and stays mariadbd's
// parent. With the default --kill-mode control-group, dirlockd stop gets
// mariadbd itself SIGTERM, and MariaDB shuts down cleanly well within
// --stop-timeout: its error log ends with its own "Shutdown complete", and
// nothing is SIGKILLed.
func TestMariaDBSafe(t *testing.T) {
	if _, err := exec.LookPath("mysqld_safe"); err != nil {
		t.Fatal("MariaDB is not installed (apt-get install mariadb-server; .ci/run does)")
	}
	u := serviceUser(t, "mysql", "mariadb-server")
	root, dl := userScratch(t, u)
	data := filepath.Join(root, "data")
	inst := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal", "--skip-test-db")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	inst.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	// The tests' TMPDIR is private to root; InnoDB's temporary files
	// need one mysql can write.
	env := append(os.Environ(), "TMPDIR="+root)
	inst.Env = env
	if out, err := inst.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := strconv.Itoa(testutil.FreePort(t))
	errLog := filepath.Join(root, "error.log")
	run := exec.Command(dl, "run", "-D", data, "--user", "mysql", "--ready-tcp", "127.0.0.1:"+port, "--stop-timeout", "50s",
		"mysqld_safe", "--no-defaults", "--datadir="+data, "--socket="+filepath.Join(root, "sock"), "--port="+port,
		"--bind-address=127.0.0.1", "--log-error="+errLog, "--pid-file="+filepath.Join(data, "mariadb.pid"), "--skip-syslog")
	run.Env = env
	w := testutil.StartLogged(t, run)
	killTreeAtEnd(t, w)
	var r testutil.Report
	testutil.Eventually(t, 60*time.Second, "MariaDB listening", func() bool {
		_, r = statusOf(t, dl, data)
		return r.Status == "ready" || !w.Alive()
	})
	if !w.Alive() {
		t.Fatalf("run exited %d:\n%s", w.ExitCode(), w.Stderr())
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.MainPID))
	if !strings.Contains(string(comm), "mysqld_safe") {
		t.Fatalf("main process %d is %q, want mysqld_safe", r.MainPID, comm)
	}
	var mariadbd int
	testutil.Eventually(t, 30*time.Second, "mariadbd under mysqld_safe", func() bool {
		for _, p := range testutil.Descendants(r.MainPID) {
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.TrimSpace(string(c)) == "mariadbd" {
				mariadbd = p
			}
		}
		return mariadbd > 0
	})
	began := time.Now()
	if code, out := runAs(t, nil, dl, "stop", "-D", data, "--timeout", "60s"); code != 0 {
		t.Fatalf("stop as root: exit %d\n%s", code, out)
	}
	took := time.Since(began)
	if code := w.WaitExit(t, 60*time.Second); code != 0 {
		t.Errorf("run exit %d, want mysqld_safe's 0:\n%s", code, w.Stderr())
	}
	b, _ := os.ReadFile(errLog)
	elog := string(b)
	if !strings.Contains(elog, "mariadbd: Shutdown complete") {
		t.Errorf("mariadbd's error log lacks its clean \"Shutdown complete\" (stop took %v):\n%s", took, elog)
	}
	if strings.Contains(w.Stderr(), "SIGKILL") || strings.Contains(elog, "killed") {
		t.Errorf("something was SIGKILLed:\n%s\n%s", w.Stderr(), elog)
	}
	if testutil.Alive(mariadbd) {
		t.Errorf("mariadbd %d survived the stop", mariadbd)
	}
	t.Logf("mysqld_safe %d, mariadbd %d: stopped cleanly in %v", r.MainPID, mariadbd, took.Round(time.Millisecond))
}

// TestRedisWithoutDashes: the server's own flags after COMMAND need no
// "--" (they were dirlockd's on old versions: "unknown flag: --port"); a
// plain stop ends redis with its own clean shutdown.
func TestRedisWithoutDashes(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed (.ci/run installs it)")
	}
	dir := testutil.DataDir(t)
	port := testutil.FreePort(t)
	w := startWrapper(t, nil, []string{bin, "run", "-D", dir, "--ready-notify", "redis-server", "--port", strconv.Itoa(port),
		"--bind", "127.0.0.1", "--dir", dir, "--save", "", "--supervised", "systemd"})
	waitHeld(t, dir, "ready", 30*time.Second)
	if got := redisDo(t, port, "PING"); got != "+PONG" {
		t.Fatalf("PING: %q", got)
	}
	if code, _, stderr := dirlockd(t, "stop", "-D", dir); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, stderr)
	}
	if code := w.WaitExit(t, 30*time.Second); code != 0 {
		t.Errorf("run exit %d:\n%s", code, w.Stderr())
	}
	if out := w.Output(); !strings.Contains(out, "ready to exit, bye bye") {
		t.Errorf("redis did not shut down on its own:\n%s", out)
	}
}

// TestStatusStates walks a server through the states status tells a
// monitoring system apart, with their exit codes: running (0), stopping
// (150: the stop has begun and a helper ignores SIGTERM), unsupervised
// (151: dirlockd run SIGKILLed, the main process lives on), survivors (1:
// the main process gone too, a child holds the lock), which a plain stop
// refuses with the advice --survivors, and stop --survivors --kill-after
// ends (SIGTERM ignored, so SIGKILL), then dead (1) and, after a clean run,
// stopped (3).
func TestStatusStates(t *testing.T) {
	dir := cliDataDir(t) // reclaimed if the test fails
	state := func(wantCode int, want string) {
		t.Helper()
		var code int
		var r testutil.Report
		testutil.Eventually(t, 10*time.Second, "status "+want, func() bool {
			code, r = statusOf(t, bin, dir)
			return code == wantCode && r.Service == want
		})
	}
	w := startRun(t, nil, dir, []string{"--stop-timeout", "60s"}, "sh", "-c", `trap "" TERM; sleep 300 & wait`)
	r := waitHeld(t, dir, "ready", 10*time.Second)
	state(exitcode.StatusRunning, "running")
	var child int
	testutil.Eventually(t, 10*time.Second, "the server's child", func() bool {
		d := testutil.Descendants(r.MainPID)
		if len(d) > 0 {
			child = d[0]
		}
		return child > 0
	})
	if code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "300ms"); code != 1 {
		t.Fatalf("stop of a server that ignores SIGTERM, --timeout 300ms: exit %d, want 1\n%s", code, stderr)
	}
	state(exitcode.StatusStopping, "stopping")
	killWait(t, w.PID())
	state(exitcode.StatusUnsupervised, "unsupervised")
	killWait(t, r.MainPID)
	state(exitcode.StatusDead, "survivors")
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--timeout", "2s")
	if code != 1 || !strings.Contains(stderr, "--survivors") {
		t.Errorf("plain stop of survivors without their main process: exit %d, want 1 and the advice --survivors\n%s", code, stderr)
	}
	if !testutil.Alive(child) {
		t.Fatalf("the plain stop signalled survivor %d", child)
	}
	code, _, stderr = dirlockd(t, "stop", "-D", dir, "--survivors", "--kill-after", "500ms", "--timeout", "20s")
	if code != 0 || !strings.Contains(stderr, "sending SIGKILL") {
		t.Errorf("stop --survivors --kill-after 500ms: exit %d, want 0 after SIGKILL\n%s", code, stderr)
	}
	testutil.Eventually(t, 10*time.Second, "the survivor gone", func() bool { return !testutil.Alive(child) })
	state(exitcode.StatusDead, "dead")
	if code, _, stderr := dirlockd(t, "run", "-D", dir, "true"); code != 0 {
		t.Fatalf("run after the survivors' stop: exit %d\n%s", code, stderr)
	}
	state(exitcode.StatusNotRunning, "stopped")
}

// TestRunUser: root starts a server as a test user with run --user; the
// directory must be that user's (the start rule applies to the user); the
// pidfile, dirlockd and the server are the user's; another user may neither
// stop nor reload it, the user itself may; and only root may change users.
func TestRunUser(t *testing.T) {
	u, other := testUser(t), testUser(t)
	root, dl := userScratch(t, u)
	mine := filepath.Join(root, "mine")
	if code, out := runAs(t, u, "/bin/mkdir", "-m", "0755", mine); code != 0 {
		t.Fatalf("mkdir as %s: %s", u.Username, out)
	}
	rootOwned := filepath.Join(root, "root-owned")
	if err := os.Mkdir(rootOwned, 0o755); err != nil {
		t.Fatal(err)
	}
	code, out := runAs(t, nil, dl, "run", "-D", rootOwned, "--user", u.Username, "true")
	if code != exitcode.Invalid || !strings.Contains(out, "root") || !strings.Contains(out, u.Username) {
		t.Errorf("run --user %s on root's directory: exit %d, want %d naming both users\n%s", u.Username, code, exitcode.Invalid, out)
	}
	w := startWrapper(t, nil, []string{dl, "run", "-D", mine, "--user", u.Username + ":" + u.Gid, "sleep", "300"})
	r := waitHeld(t, mine, "ready", 10*time.Second)
	for what, got := range map[string]string{"dirlockd": procUID(t, r.PID), "the server": procUID(t, r.MainPID),
		"the pidfile": fileOwner(t, filepath.Join(mine, "dirlockd.pid"))} {
		if got != u.Uid {
			t.Errorf("%s is uid %s's, want %s's (%s)", what, got, u.Username, u.Uid)
		}
	}
	// root's supplementary groups are gone: only the user's own (initgroups).
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.MainPID))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			if g := strings.Fields(rest); !slices.Equal(g, []string{u.Gid}) {
				t.Errorf("the server's supplementary groups are %q, want only %s's group %s", g, u.Username, u.Gid)
			}
		}
		if rest, ok := strings.CutPrefix(line, "Gid:"); ok {
			if g := strings.Fields(rest); len(g) < 2 || g[0] != u.Gid || g[1] != u.Gid {
				t.Errorf("the server's gids are %q, want %s", g, u.Gid)
			}
		}
	}
	// Another user may not even look (the ownership rule of inspection);
	// the answer names who may.
	for _, cmd := range []string{"stop", "reload"} {
		if code, out := runAs(t, other, dl, cmd, "-D", mine); code == 0 || !strings.Contains(out, "run as root or as "+u.Username) {
			t.Errorf("%s by another user: exit %d, want a refusal naming %s\n%s", cmd, code, u.Username, out)
		}
	}
	if !w.Alive() {
		t.Fatalf("the server died:\n%s", w.Stderr())
	}
	if code, out := runAs(t, other, dl, "run", "-D", mine, "--user", u.Username, "true"); code != exitcode.Invalid || !strings.Contains(out, "only root") {
		t.Errorf("run --user by another user: exit %d, want %d: only root\n%s", code, exitcode.Invalid, out)
	}
	if code, out := runAs(t, u, dl, "stop", "-D", mine); code != 0 {
		t.Errorf("stop by %s: exit %d\n%s", u.Username, code, out)
	}
	if code := w.WaitExit(t, 10*time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("run exit %d, want 143 (sleep killed by SIGTERM)", code)
	}
}

// TestStopSurvivorsSparesOtherUsers: another local user starts a process
// that carries the dead holder's token and pidfile in its environment (an
// environment is what a process says of itself), so the survivor search
// lists it. stop --survivors --kill-after stops the real server, and never
// signals the other user's process: it is not proven (it holds no lock, and
// runs as neither the pidfile's owner nor root). The real server is proven
// by its environment too, being root's, the pidfile's owner.
func TestStopSurvivorsSparesOtherUsers(t *testing.T) {
	u := testUser(t)
	dir := cliDataDir(t) // reclaimed if the test fails
	// The server closes the locked descriptor: once the wrapper is dead,
	// only the witnesses of the environment find it, as they find the
	// impostor.
	w := startRun(t, nil, dir, nil, "sh", "-c", `exec 3>&-; trap "" TERM; exec sleep 300`)
	r := waitHeld(t, dir, "ready", 10*time.Second)
	rec := recordOf(t, dir)
	impostor := exec.Command("sleep", "301")
	impostor.Env = []string{"DIRLOCKD_TOKEN=" + rec.Token, "DIRLOCKD_PIDFILE=" + filepath.Join(dir, "dirlockd.pid")}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	impostor.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	imp := testutil.StartLogged(t, impostor)
	killWait(t, w.PID())
	testutil.Eventually(t, 10*time.Second, "the survivor search to list the impostor", func() bool {
		_, s := statusOf(t, bin, dir)
		return slices.Contains(s.Orphans, imp.PID())
	})
	code, _, stderr := dirlockd(t, "stop", "-D", dir, "--survivors", "--kill-after", "1s", "--timeout", "4s")
	if !imp.Alive() {
		t.Fatalf("stop --survivors killed another user's process %d that only claimed to be a survivor\n%s", imp.PID(), stderr)
	}
	if !strings.Contains(stderr, fmt.Sprintf("not proven one now: not signalled\" datadir=%s pid=%d", dir, imp.PID())) {
		t.Errorf("stop --survivors did not say it spared PID %d:\n%s", imp.PID(), stderr)
	}
	testutil.Eventually(t, 10*time.Second, "the real server gone", func() bool { return !testutil.Alive(r.MainPID) })
	if code != 1 {
		t.Errorf("stop --survivors with the impostor left: exit %d, want 1 (survivors left)", code)
	}
	imp.Kill()
	if code, _, stderr := dirlockd(t, "run", "-D", dir, "true"); code != 0 {
		t.Errorf("run after the stop: exit %d\n%s", code, stderr)
	}
}

// TestKillModes: a server whose main process has a child (sh running sleep
// in the background), stopped with SIGTERM under each --kill-mode.
// control-group signals both at once; mixed only the main process, then
// SIGTERM to the child once the main process has exited; process only the
// main process, and dirlockd holds the directory (status stopping) until
// the child exits on its own (here, once the test kills it).
func TestKillModes(t *testing.T) {
	for _, mode := range []string{"control-group", "mixed", "process"} {
		t.Run(mode, func(t *testing.T) {
			dir := cliDataDir(t)
			w := startRun(t, nil, dir, []string{"--kill-mode", mode, "--log-level", "debug", "--stop-timeout", "60s"}, "sh", "-c", "sleep 300 & wait")
			r := waitHeld(t, dir, "ready", 10*time.Second)
			var child int
			testutil.Eventually(t, 10*time.Second, "the main process's child", func() bool {
				if d := testutil.Descendants(r.MainPID); len(d) > 0 {
					child = d[0]
				}
				return child > 0
			})
			if err := syscall.Kill(w.PID(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("pids=[%d]", r.MainPID)
			if mode == "control-group" {
				want = fmt.Sprintf("pids=\"[%d %d]\"", r.MainPID, child)
			}
			testutil.Eventually(t, 10*time.Second, "the stop signal sent", func() bool { return strings.Contains(w.Stderr(), "sending the stop signal") })
			if !strings.Contains(w.Stderr(), "kill_mode="+mode+" "+want) {
				t.Errorf("--kill-mode %s: the stop signal went elsewhere than %s:\n%s", mode, want, w.Stderr())
			}
			if mode == "process" {
				testutil.Eventually(t, 10*time.Second, "the main process gone", func() bool { return !testutil.Alive(r.MainPID) })
				if code, s := statusOf(t, bin, dir); code != exitcode.StatusStopping || !testutil.Alive(child) {
					t.Errorf("--kill-mode process, main process gone, child alive %v: status %d %q, want %d stopping", testutil.Alive(child), code, s.Service, exitcode.StatusStopping)
				}
				killWait(t, child)
			}
			if code := w.WaitExit(t, 20*time.Second); code != 128+int(syscall.SIGTERM) {
				t.Errorf("run exit %d, want 143", code)
			}
			if strings.Contains(w.Stderr(), "did not exit in time") {
				t.Errorf("--kill-mode %s: dirlockd sent SIGKILL:\n%s", mode, w.Stderr())
			}
			if mode == "mixed" && !strings.Contains(w.Stderr(), "stopping the processes left in its tree") {
				t.Errorf("--kill-mode mixed: the child did not get SIGTERM once the main process had exited:\n%s", w.Stderr())
			}
		})
	}
}
