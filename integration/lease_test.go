package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dirlockd/dirlockd/integration/fusefs"
	"github.com/dirlockd/dirlockd/internal/testutil"
)

// leaseServer prints its view of the lease, then runs until stopped; with
// ignoreTerm it ignores SIGTERM.
func leaseServer(ignoreTerm bool) []string {
	trap := ""
	if ignoreTerm {
		trap = "trap '' TERM; "
	}
	return []string{"sh", "-c", trap + `echo "pid=$$ token=$DIRLOCKD_FENCING_TOKEN key=$DIRLOCKD_LEASE_KEY ttl=$DIRLOCKD_LEASE_TTL"; while :; do sleep 0.05; done`}
}

var serverLine = regexp.MustCompile(`pid=(\d+) token=(\d+) key=(\S*) ttl=(\d+)`)

// eventuallyLogged is the package's eventually that shows the wrapper w's
// log when it times out.
func eventuallyLogged(t *testing.T, w *testutil.Proc, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; dirlockd's log:\n%s", timeout, what, w.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitingForLease waits until w has found the lease key held and says it
// waits for it, then a second more: time to reach its watch.
func waitingForLease(t *testing.T, w *testutil.Proc) {
	t.Helper()
	eventuallyLogged(t, w, 30*time.Second, "the start to wait for the lease", func() bool {
		return strings.Contains(w.Stderr(), "the lease key is held elsewhere; waiting for it")
	})
	time.Sleep(time.Second)
}

// leaseView waits for the server's line and returns its PID and token.
func leaseView(t *testing.T, w *testutil.Proc) (pid int, token int64, key, ttl string) {
	t.Helper()
	return leaseViewWithin(t, w, 30*time.Second)
}

// leaseViewWithin is leaseView with a wait of its own.
func leaseViewWithin(t *testing.T, w *testutil.Proc, wait time.Duration) (pid int, token int64, key, ttl string) {
	t.Helper()
	var m []string
	eventuallyLogged(t, w, wait, "the server's line", func() bool {
		m = serverLine.FindStringSubmatch(w.Stdout())
		return m != nil
	})
	pid, _ = strconv.Atoi(m[1])
	token, _ = strconv.ParseInt(m[2], 10, 64)
	return pid, token, m[3], m[4]
}

// TestLeaseRun: the server gets the token, key and TTL; a start on another
// directory under the same key exits 75 naming the holder and writes
// nothing; a waiter takes over when the holder stops, with a higher token;
// the record carries lease_key and fencing_token. 3 hand-offs.
func TestLeaseRun(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/run", "--lease-ttl", "3s"}
	dirs := []string{testutil.DataDir(t), testutil.DataDir(t)}
	cur := startRun(t, nil, dirs[0], lf, leaseServer(false)...)
	pid, token, key, ttl := leaseView(t, cur)
	if key != "/dirlockd/run" || ttl != "3" || token <= 0 {
		t.Fatalf("server saw key %q ttl %q token %d", key, ttl, token)
	}
	testutil.Eventually(t, 10*time.Second, "lease_key and fencing_token in the record", func() bool {
		rec := recordOf(t, dirs[0])
		return rec.Extra["lease_key"] == "/dirlockd/run" && rec.Extra["fencing_token"] == strconv.FormatInt(token, 10)
	})
	code, _, stderr := dirlockd(t, append(append([]string{"run", "-D", dirs[1]}, lf...), "--", "touch", filepath.Join(dirs[1], "ran"))...)
	if code != 75 || !strings.Contains(stderr, fmt.Sprintf("PID %d on host", cur.PID())) || !strings.Contains(stderr, "since") {
		t.Fatalf("second start: exit %d, want 75 naming PID %d:\n%s", code, cur.PID(), stderr)
	}
	if ents, _ := os.ReadDir(dirs[1]); len(ents) != 0 {
		t.Fatalf("a refused start wrote %v", ents)
	}
	for round := range 3 {
		next := startRun(t, nil, dirs[(round+1)%2], append(lf, "--wait", "60s"), leaseServer(false)...)
		time.Sleep(500 * time.Millisecond) // give it time to start waiting: it must not start
		if serverLine.MatchString(next.Stdout()) {
			t.Fatalf("round %d: a waiter started while the lease was held", round)
		}
		cur.Cmd.Process.Signal(syscall.SIGTERM)
		if code := cur.WaitExit(t, 20*time.Second); code != 143 {
			t.Fatalf("round %d: holder exit %d:\n%s", round, code, cur.Stderr())
		}
		if testutil.Alive(pid) {
			t.Fatalf("round %d: server %d alive after its wrapper exited", round, pid)
		}
		if !strings.Contains(cur.Stderr(), "revoked the lease") {
			t.Fatalf("round %d: no revoke logged:\n%s", round, cur.Stderr())
		}
		var ntoken int64
		pid, ntoken, _, _ = leaseView(t, next)
		if ntoken <= token {
			t.Fatalf("round %d: token %d after %d", round, ntoken, token)
		}
		token, cur = ntoken, next
	}
	cur.Cmd.Process.Signal(syscall.SIGTERM)
	if code := cur.WaitExit(t, 20*time.Second); code != 143 {
		t.Fatalf("last holder exit %d:\n%s", code, cur.Stderr())
	}
}

// TestLeaseUnavailable: etcd not listening is exit 69, the server never
// starts, and nothing is written. 3 times.
func TestLeaseUnavailable(t *testing.T) {
	for range 3 {
		dir := testutil.DataDir(t)
		start := time.Now()
		code, _, stderr := dirlockd(t, "run", "-D", dir, "--etcd", "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), "--lease-key", "/k",
			"--etcd-dial-timeout", "1s", "--", "touch", filepath.Join(dir, "ran"))
		if code != 69 || !strings.Contains(stderr, "unavailable") {
			t.Fatalf("exit %d, want 69:\n%s", code, stderr)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("took %v with a 1s dial timeout", d)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("an unavailable etcd left %v", ents)
		}
	}
}

// TestLeaseWaitUnavailable: with --wait, an etcd that does not answer at
// the start (SIGSTOPped here, as a member without a majority during an
// election) is waited for, as it is once the wait has begun: the start logs
// it, the server starts once etcd answers, and a wait that ends first is
// exit 69. Before, such a start exited 69 at once, and a standby started
// just as its holder's host was cut off never took over (CI, issue 19).
// 2 rounds of each.
func TestLeaseWaitUnavailable(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	m := e.Members[0]
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/wait-unavailable", "--lease-ttl", "3s", "--etcd-dial-timeout", "1s"}
	waiting := func(w *testutil.Proc) bool { return strings.Contains(w.Stderr(), "is unavailable: read the lock key") }
	for round := range 2 {
		m.Stop()
		w := startRun(t, nil, testutil.DataDir(t), append(lf, "--wait", "1m"), leaseServer(false)...)
		eventuallyLogged(t, w, 30*time.Second, "the start to say it waits for etcd", func() bool { return waiting(w) })
		time.Sleep(2 * time.Second) // more attempts than one, all unanswered
		if serverLine.MatchString(w.Stdout()) || !w.Alive() {
			m.Cont()
			t.Fatalf("round %d: with etcd stopped, the server started or the wrapper exited:\n%s", round, w.Stderr())
		}
		m.Cont()
		pid, _, _, _ := leaseView(t, w)
		w.Cmd.Process.Signal(syscall.SIGTERM)
		if code := w.WaitExit(t, 20*time.Second); code != 143 {
			t.Fatalf("round %d: exit %d after SIGTERM, want 143:\n%s", round, code, w.Stderr())
		}
		t.Logf("round %d: etcd stopped at the start with --wait 1m: logged, waited, server %d started once etcd answered", round, pid)
	}
	for round := range 2 {
		m.Stop()
		start := time.Now()
		code, _, stderr := dirlockd(t, append(append([]string{"run", "-D", testutil.DataDir(t)}, lf...), "--wait", "3s", "--", "true")...)
		took := time.Since(start)
		m.Cont()
		if code != 69 || !strings.Contains(stderr, "waiting for it (--wait)") || !strings.Contains(stderr, "cannot start: etcd at") {
			t.Fatalf("round %d: exit %d after %v, want 69 once the 3s wait ended:\n%s", round, code, took, stderr)
		}
		if took < 3*time.Second {
			t.Fatalf("round %d: gave up after %v, before the 3s wait ended:\n%s", round, took, stderr)
		}
		t.Logf("round %d: etcd stopped throughout --wait 3s: exit 69 after %v", round, took.Round(time.Millisecond))
	}
}

// TestLeaseUsage: flag combinations that leave no room, or name no key,
// are usage errors; --lease-ttl 3s alone is valid.
func TestLeaseUsage(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	dir := testutil.DataDir(t)
	for _, c := range []struct {
		flags []string
		code  int
		want  string
	}{
		{[]string{"--etcd", e.Endpoints()}, 64, "--lease-key"},
		{[]string{"--lease-key", "/k"}, 64, "without --etcd"},
		{[]string{"--etcd", e.Endpoints(), "--lease-key", "/k", "--lease-ttl", "3s", "--lease-stop-timeout", "2s"}, 64, "leaves no room"},
		{[]string{"--etcd", e.Endpoints(), "--lease-key", "/k", "--lease-ttl", "1500ms"}, 64, "whole seconds"},
		{[]string{"--etcd", e.Endpoints(), "--lease-key", "/k", "--cert", "/x"}, 64, "go together"},
		{[]string{"--etcd", e.Endpoints(), "--lease-key", "/k", "--lease-ttl", "3s"}, 0, ""},
		{[]string{"--etcd", e.Endpoints(), "--lease-key", "/k", "--lease-ttl", "3s", "--lease-stop-timeout", "1s"}, 0, ""},
	} {
		code, _, stderr := dirlockd(t, append(append([]string{"run", "-D", dir}, c.flags...), "--", "true")...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", c.flags, code, c.code, c.want, stderr)
		}
	}
	// A key of another tool: a clear refusal (78), nothing started.
	put := `{"key":"` + base64.StdEncoding.EncodeToString([]byte("/foreign")) + `","value":"` + base64.StdEncoding.EncodeToString([]byte("v")) + `"}`
	resp, err := http.Post(e.Members[0].ClientURL+"/v3/kv/put", "application/json", strings.NewReader(put))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--etcd", e.Endpoints(), "--lease-key", "/foreign", "--", "touch", filepath.Join(dir, "ran"))
	if _, err := os.Stat(filepath.Join(dir, "ran")); code != 78 || !strings.Contains(stderr, "not a dirlockd holder") || err == nil {
		t.Errorf("a foreign key: exit %d, want 78 and nothing started:\n%s", code, stderr)
	}
	// $DIRLOCKD_ETCD stands for --etcd.
	code, _, stderr = dirlockdEnv(t, append(os.Environ(), "DIRLOCKD_ETCD=127.0.0.1:1"), "run", "-D", dir, "--lease-key", "/k", "--etcd-dial-timeout", "1s", "--", "true")
	if code != 69 {
		t.Errorf("DIRLOCKD_ETCD unreachable: exit %d, want 69:\n%s", code, stderr)
	}
}

// TestLeaseRefused: etcd with authentication on. A user without
// permission on the key, and a wrong password, are refused with exit 78
// and an error that says what to do; nothing is started. The same user
// with permission runs. 2 rounds each.
func TestLeaseRefused(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	e.EnableAuth(t, "rootpw", testutil.EtcdGrant{User: "app", Password: "apppw", Key: "/dirlockd/ok"})
	dir := testutil.DataDir(t)
	ran := filepath.Join(dir, "ran")
	for round := range 2 {
		for _, c := range []struct {
			key, user, want string
			code            int
		}{
			{"/dirlockd/other", "app:apppw", "etcdctl role grant-permission ROLE readwrite /dirlockd/other", 78},
			{"/dirlockd/ok", "app:wrong", "check --etcd-user", 78},
			{"/dirlockd/ok", "app:apppw", "revoked the lease", 0},
		} {
			code, _, stderr := dirlockd(t, "run", "-D", dir, "--etcd", e.Endpoints(), "--lease-key", c.key, "--etcd-user", c.user, "--", "touch", ran)
			_, statErr := os.Stat(ran)
			if code != c.code || !strings.Contains(stderr, c.want) || (statErr == nil) != (c.code == 0) {
				t.Fatalf("round %d: key %s user %s: exit %d, want %d with %q (ran: %v):\n%s", round, c.key, c.user, code, c.code, c.want, statErr == nil, stderr)
			}
			os.Remove(ran)
			if round == 0 {
				t.Logf("key %s user %s: exit %d: %s", c.key, c.user, code, strings.TrimSpace(stderr))
			}
		}
	}
}

// TestLeaseEtcdStopped: with etcd SIGSTOPped, the server is dead before
// the lease can end: by SIGTERM at deadline - stop timeout - margin, or, if
// it ignores SIGTERM, by SIGKILL at deadline - margin. 2 rounds each.
func TestLeaseEtcdStopped(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	const ttl = 3 * time.Second
	for _, ignore := range []bool{false, true} {
		for round := range 2 {
			dir := testutil.DataDir(t)
			w := startRun(t, nil, dir, []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/stopped", "--lease-ttl", "3s", "--stop-timeout", "30s"}, leaseServer(ignore)...)
			pid, _, _, _ := leaseView(t, w)
			// The last renewal that can succeed was sent before the stop:
			// the lease cannot end before stop + TTL.
			e.Members[0].Stop()
			stopped := time.Now()
			testutil.Eventually(t, 30*time.Second, "the server's death", func() bool { return !testutil.Alive(pid) })
			dead := time.Since(stopped)
			e.Members[0].Cont()
			code := w.WaitExit(t, 30*time.Second)
			t.Logf("ignore SIGTERM %v, round %d: server dead %v after etcd stopped (TTL %v), wrapper exit %d", ignore, round, dead.Round(time.Millisecond), ttl, code)
			if dead >= ttl-ttl/20 {
				t.Fatalf("server died %v after etcd stopped: not before the lease could end (TTL %v):\n%s", dead, ttl, w.Stderr())
			}
			want, wantLog := 143, "was not renewed in time"
			if ignore {
				want, wantLog = 137, "SIGKILL to the server's tree before the lease can end"
			}
			if code != want || !strings.Contains(w.Stderr(), wantLog) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, want, wantLog, w.Stderr())
			}
		}
	}
}

// leaseCheck is "check --json" with the lease's fields.
type leaseCheck struct {
	State        string `json:"state"`
	Reason       string `json:"reason"`
	FencingToken int64  `json:"fencing_token"`
	Lease        *struct {
		Key          string `json:"key"`
		State        string `json:"state"`
		Host         string `json:"host"`
		PID          int    `json:"pid"`
		FencingToken int64  `json:"fencing_token"`
		Error        string `json:"error"`
	} `json:"lease"`
}

func checkLease(t *testing.T, cmd, dir string, lf ...string) (int, leaseCheck, string) {
	t.Helper()
	code, out, stderr := dirlockd(t, append([]string{cmd, "--json", "-D", dir}, lf...)...)
	var r leaseCheck
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s --json: %q (%v); stderr %s", cmd, out, err, stderr)
	}
	return code, r, stderr
}

// TestLeaseCheckStatusWait: a lease held by another holder makes a
// directory whose local lock is free held for check (1) and running for
// status (0), with its host, PID and token; wait --for free waits for the
// lease too; an unreachable etcd is invalid (3).
func TestLeaseCheckStatusWait(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/check"}
	held, other := testutil.DataDir(t), testutil.DataDir(t)
	w := startRun(t, nil, held, append(lf, "--lease-ttl", "3s"), leaseServer(false)...)
	_, token, _, _ := leaseView(t, w)

	if code, _ := check(t, other); code != 0 {
		t.Fatalf("check without --etcd on a free directory: exit %d", code)
	}
	code, r, stderr := checkLease(t, "check", other, lf...)
	if code != 1 || r.State != "held" || r.Lease == nil || r.Lease.State != "held" || r.Lease.PID != w.PID() || r.Lease.FencingToken != token || !strings.Contains(r.Reason, "lease key") {
		t.Fatalf("check --etcd of a directory held elsewhere: exit %d %+v %+v %s", code, r, r.Lease, stderr)
	}
	code, r, _ = checkLease(t, "check", held, lf...)
	if code != 1 || r.State != "held" || r.FencingToken != token || r.Lease == nil || r.Lease.PID != w.PID() {
		t.Fatalf("check --etcd of the holder's directory: exit %d %+v", code, r)
	}
	code, r, _ = checkLease(t, "status", other, lf...)
	if code != 0 || r.State != "held" || r.Lease.FencingToken != token {
		t.Fatalf("status --json --etcd: exit %d %+v", code, r)
	}
	code, out, _ := dirlockd(t, append([]string{"status", "-D", other}, lf...)...)
	if code != 0 || !strings.Contains(out, "held through the lease key /dirlockd/check") || !strings.Contains(out, fmt.Sprintf("fencing token %d", token)) {
		t.Fatalf("status --etcd: exit %d:\n%s", code, out)
	}
	if code, _, stderr := dirlockd(t, append([]string{"wait", "-D", other, "--for", "free", "--timeout", "1s"}, lf...)...); code != 1 {
		t.Fatalf("wait --for free while the lease is held: exit %d, want 1 (timed out):\n%s", code, stderr)
	}
	// A wait keeps one agent, blocked on a watch, for all its looks: for 2 s
	// the same one agent and no other (one started at each look would show
	// a new PID every 100 ms).
	wc := exec.Command(bin, append([]string{"wait", "-D", other, "--for", "free", "--timeout", "60s"}, lf...)...)
	if err := wc.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		wc.Wait()
		done <- wc.ProcessState.ExitCode()
	}()
	first := agentOf(t, wc.Process.Pid)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var agents []int
		for _, d := range testutil.Descendants(wc.Process.Pid) {
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d)); strings.TrimSpace(string(c)) == "dirlockd-etcd" {
				agents = append(agents, d)
			}
		}
		if len(agents) != 1 || agents[0] != first {
			t.Fatalf("wait --etcd runs agents %v, want the one it started, %d", agents, first)
		}
	}
	w.Cmd.Process.Signal(syscall.SIGTERM)
	if code := w.WaitExit(t, 20*time.Second); code != 143 {
		t.Fatalf("holder exit %d", code)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("wait --for free after the release: exit %d", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wait --for free did not return after the release")
	}
	if code, r, _ := checkLease(t, "check", other, lf...); code != 0 || r.Lease.State != "free" {
		t.Fatalf("check after the release: exit %d %+v", code, r)
	}
	code, r, _ = checkLease(t, "check", other, "--etcd", "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), "--lease-key", "/k", "--etcd-dial-timeout", "1s")
	if code != 3 || r.State != "invalid" || r.Lease.State != "unknown" {
		t.Fatalf("check with etcd unreachable: exit %d %+v", code, r)
	}
}

// TestLeaseWrapperStopped: with dirlockd itself SIGSTOPped (or SIGKILLed),
// nobody renews the lease, and the fence kills its server before the lease
// can end; with its etcd agent SIGSTOPped, no renewal is answered, and
// dirlockd kills its server itself. A waiter on another directory starts
// only after that server died. 2 rounds each.
func TestLeaseWrapperStopped(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	const ttl = 3 * time.Second
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/paused", "--lease-ttl", "3s"}
	for _, how := range []string{"dirlockd SIGSTOP", "dirlockd SIGKILL", "agent SIGSTOP"} {
		for round := range 2 {
			a, b := testutil.DataDir(t), testutil.DataDir(t)
			w := startRun(t, nil, a, lf, leaseServer(true)...)
			pid, token, _, _ := leaseView(t, w)
			next := startRun(t, nil, b, append(lf, "--wait", "60s"), leaseServer(false)...)
			agentPID := agentOf(t, w.PID())
			hit := time.Now()
			switch how {
			case "dirlockd SIGSTOP":
				w.Cmd.Process.Signal(syscall.SIGSTOP)
			case "dirlockd SIGKILL":
				w.Cmd.Process.Signal(syscall.SIGKILL)
			case "agent SIGSTOP":
				syscall.Kill(agentPID, syscall.SIGSTOP)
			}
			testutil.Eventually(t, 30*time.Second, "the server's death", func() bool { return !testutil.Alive(pid) })
			dead := time.Since(hit)
			if how == "agent SIGSTOP" {
				syscall.Kill(agentPID, syscall.SIGCONT)
			}
			_, ntoken, _, _ := leaseView(t, next)
			started := time.Since(hit)
			t.Logf("%s, round %d: server dead %v after, the next server started after %v (TTL %v)", how, round, dead.Round(time.Millisecond), started.Round(time.Millisecond), ttl)
			if dead >= ttl {
				t.Fatalf("%s: the server died %v later: not before the lease could end:\n%s", how, dead, w.Stderr())
			}
			if ntoken <= token {
				t.Fatalf("token %d after %d", ntoken, token)
			}
			switch how {
			case "agent SIGSTOP":
				if code := w.WaitExit(t, 30*time.Second); code != 137 || !strings.Contains(w.Stderr(), "sending SIGKILL to the server's tree before the lease can end") {
					t.Fatalf("wrapper of a stopped agent: exit %d, want 137 after its own SIGKILL:\n%s", code, w.Stderr())
				}
			case "dirlockd SIGSTOP":
				if !strings.Contains(w.Stderr(), "dirlockd fence: the lease was not renewed in time") {
					t.Fatalf("the fence did not say it killed:\n%s", w.Stderr())
				}
				w.Cmd.Process.Signal(syscall.SIGCONT)
				if code := w.WaitExit(t, 30*time.Second); code != 137 {
					t.Fatalf("resumed wrapper exit %d, want 137:\n%s", code, w.Stderr())
				}
			default:
				<-w.Done()
				if !strings.Contains(w.Stderr(), "dirlockd fence: the lease was not renewed in time") {
					t.Fatalf("the fence did not say it killed:\n%s", w.Stderr())
				}
				// A start takes the killed wrapper's segment over.
				if code, _, stderr := dirlockd(t, "run", "-D", a, "--", "true"); code != 0 {
					t.Fatalf("start after the killed wrapper: exit %d:\n%s", code, stderr)
				}
			}
			next.Cmd.Process.Signal(syscall.SIGTERM)
			if code := next.WaitExit(t, 20*time.Second); code != 143 {
				t.Fatalf("next holder exit %d:\n%s", code, next.Stderr())
			}
		}
	}
}

// agentOf returns the PID of the etcd agent under the process parent,
// waiting up to 10 s for it.
func agentOf(t *testing.T, parent int) int {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, d := range testutil.Descendants(parent) {
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d)); strings.TrimSpace(string(c)) == "dirlockd-etcd" {
				return d
			}
		}
	}
	t.Fatalf("no dirlockd-etcd under PID %d within 10s", parent)
	return 0
}

// TestLeaseNoAgent: a dirlockd installed without its etcd agent refuses
// --etcd with exit 78, naming both places it looked, and starts nothing;
// without --etcd it needs no agent.
func TestLeaseNoAgent(t *testing.T) {
	lone := filepath.Join(t.TempDir(), "dirlockd")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := testutil.DataDir(t)
	cmd := exec.Command(lone, "run", "-D", dir, "--etcd", "127.0.0.1:1", "--lease-key", "/k", "--", "touch", filepath.Join(dir, "ran"))
	out, _ := cmd.CombinedOutput()
	want := []string{filepath.Join(filepath.Dir(lone), "dirlockd-etcd"), filepath.Join(filepath.Dir(filepath.Dir(lone)), "libexec", "dirlockd", "dirlockd-etcd")}
	if code := cmd.ProcessState.ExitCode(); code != 78 || !strings.Contains(string(out), want[0]) || !strings.Contains(string(out), want[1]) {
		t.Fatalf("run --etcd without the agent: exit %d, want 78 naming %v:\n%s", code, want, out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused start wrote %v", ents)
	}
	cmd = exec.Command(lone, "run", "-D", dir, "--", "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run without --etcd and without the agent: %v\n%s", err, out)
	}
}

// TestLeaseForkingServer: the fence is not of the server's tree: when the
// command exits leaving one process, that process becomes the main one
// (the fence does not count), and once it is gone dirlockd releases and
// exits (the fence does not keep the tree alive). 3 rounds.
func TestLeaseForkingServer(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	for round := range 3 {
		dir := testutil.DataDir(t)
		w := startRun(t, nil, dir, []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/fork", "--lease-ttl", "3s"},
			"sh", "-c", `sleep 1000 & echo "child=$!"`)
		eventuallyLogged(t, w, 30*time.Second, "the only process left to become the main one", func() bool {
			return strings.Contains(w.Stderr(), "the server's main process is now the only process left")
		})
		w.Cmd.Process.Signal(syscall.SIGTERM)
		if code := w.WaitExit(t, 20*time.Second); code != 143 {
			t.Fatalf("round %d: exit %d, want 143 (the sleep killed by SIGTERM):\n%s", round, code, w.Stderr())
		}
		if strings.Contains(w.Stderr(), "the fence process exited:") {
			t.Fatalf("round %d: the fence died early or was signalled:\n%s", round, w.Stderr())
		}
		if code, r := check(t, dir); code != 0 || r.State != "free" {
			t.Fatalf("round %d: after the exit: check %d %+v", round, code, r)
		}
	}
}

// TestLeaseFenceFile: the fence file records the highest token that ran;
// a start whose token is lower (etcd's history went back) is refused with
// 78 and the server never starts. 3 rounds.
func TestLeaseFenceFile(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	dir := testutil.DataDir(t)
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/fencefile", "--lease-ttl", "3s"}
	fence := filepath.Join(dir, "dirlockd.fence")
	var last int64
	for round := range 3 {
		code, out, stderr := dirlockd(t, append(append([]string{"run", "-D", dir}, lf...), "--", "sh", "-c", "echo token=$DIRLOCKD_FENCING_TOKEN")...)
		if code != 0 {
			t.Fatalf("round %d: exit %d:\n%s", round, code, stderr)
		}
		token, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(out, "token=")), 10, 64)
		b, _ := os.ReadFile(fence)
		if token <= last || !strings.Contains(string(b), fmt.Sprintf("fencing_token=%d\n", token)) {
			t.Fatalf("round %d: token %d after %d; fence file:\n%s", round, token, last, b)
		}
		last = token
	}
	// etcd "restored from an old snapshot": a token far above etcd's.
	if err := os.WriteFile(fence, []byte("fencing_token=1000000\nlease_key=/dirlockd/fencefile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		code, _, stderr := dirlockd(t, append(append([]string{"run", "-D", dir}, lf...), "--", "touch", filepath.Join(dir, "ran"))...)
		if code != 78 || !strings.Contains(stderr, "below 1000000") {
			t.Fatalf("round %d: exit %d, want 78:\n%s", round, code, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
			t.Fatalf("round %d: the server ran under a lower token", round)
		}
		if code, r, _ := checkLease(t, "check", dir, lf[:4]...); code != 0 || r.Lease.State != "free" {
			t.Fatalf("round %d: a refused start left the lease or the directory held: %d %+v", round, code, r)
		}
	}
}

// TestFUSEStressLease: two hosts (their own UTS, PID and IPC namespaces)
// stress one directory through the test FUSE filesystem in its local-only
// mode, whose locks do not cross mounts: without a lease the witnesses
// find two holders (TestFUSEStress); with --etcd the lease alone keeps one
// holder, and the fencing tokens grow in start order. 3 rounds without
// kills, 1 with --kill-rate (a killed worker's lease ends after its TTL).
func TestFUSEStressLease(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	_, _, a, b := mountHosts(t, fusefs.LocalOnly)
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/stress", "--lease-ttl", "2s"}
	for round := range 4 {
		args := append([]string{"--workers", "3", "--duration", "3s", "--hold", "2ms"}, lf...)
		if round == 3 {
			args = append(args, "--kill-rate", "0.02", "--duration", "8s")
		}
		codes, reps := stressHosts(t, a, b, args...)
		logStress(t, round, codes, reps)
		v := reps[2]
		if codes[2] != 0 || v.Log.ViolationCount != 0 || v.Verdict != "pass" {
			t.Fatalf("round %d: with the lease, verify found %d violations (exit %d): %s\n%+v", round, v.Log.ViolationCount, codes[2], v.Summary, v.Log.Violations)
		}
		if len(v.Log.Hosts) != 2 {
			t.Fatalf("round %d: verify saw hosts %+v, want alpha and beta", round, v.Log.Hosts)
		}
		for _, h := range v.Log.Hosts {
			if h.Entered == 0 {
				t.Fatalf("round %d: host %s never held the directory", round, h.Host)
			}
		}
	}
	// The tokens are in the log, and the checker judged them: a log whose
	// tokens go back fails (TestCheckFencingToken); here every enter has one.
	log, err := os.ReadFile(filepath.Join(a, "dirlockd-stress.log"))
	if err != nil {
		t.Fatal(err)
	}
	enters, fenced := 0, 0
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, `"ev":"enter"`) {
			enters++
			if strings.Contains(line, `"fence":`) {
				fenced++
			}
		}
	}
	if enters == 0 || fenced != enters {
		t.Fatalf("%d of %d enters carry a fencing token", fenced, enters)
	}
}

// TestLeaseProxy: the wrapper reaches etcd through a TCP proxy of the test.
// Answers delayed by 600 ms (a fifth of the TTL) for 2 TTLs, then a
// connection that flaps (400 ms black holes every 800 ms) for 2 TTLs, cost
// no false loss; a black hole stops the server before the lease can end.
// 2 rounds.
func TestLeaseProxy(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	const ttl = 3 * time.Second
	for round := range 2 {
		p := testutil.StartProxy(t, strings.TrimPrefix(e.Members[0].ClientURL, "http://"))
		dir := testutil.DataDir(t)
		w := startRun(t, nil, dir, []string{"--etcd", p.Addr, "--lease-key", "/dirlockd/proxy", "--lease-ttl", "3s"}, leaseServer(false)...)
		pid, _, _, _ := leaseView(t, w)
		p.SetDelay(600 * time.Millisecond)
		end := time.Now().Add(2 * ttl)
		for time.Now().Before(end) {
			if !testutil.Alive(pid) {
				t.Fatalf("round %d: a 600ms delay stopped the server (TTL %v):\n%s", round, ttl, w.Stderr())
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Endpoints flapping: 400 ms black holes every 800 ms.
		p.SetDelay(0)
		for end := time.Now().Add(2 * ttl); time.Now().Before(end); {
			p.BlackHole(true)
			time.Sleep(400 * time.Millisecond)
			p.BlackHole(false)
			time.Sleep(400 * time.Millisecond)
			if !testutil.Alive(pid) {
				t.Fatalf("round %d: a flapping connection stopped the server (TTL %v):\n%s", round, ttl, w.Stderr())
			}
		}
		p.BlackHole(true)
		holed := time.Now()
		testutil.Eventually(t, 30*time.Second, "the server's death", func() bool { return !testutil.Alive(pid) })
		dead := time.Since(holed)
		t.Logf("round %d: 600ms delay, then flapping, for %v each: no loss; black hole: server dead %v after (TTL %v)", round, 2*ttl, dead.Round(time.Millisecond), ttl)
		if dead >= ttl {
			t.Fatalf("round %d: server died %v after the black hole: not before the lease could end:\n%s", round, dead, w.Stderr())
		}
		p.BlackHole(false)
		if code := w.WaitExit(t, 30*time.Second); code != 143 {
			t.Fatalf("round %d: exit %d, want 143:\n%s", round, code, w.Stderr())
		}
	}
}

// leaderOf finds the etcd cluster's leader with the maintenance API.
func leaderOf(t *testing.T, e *testutil.EtcdCluster) *testutil.EtcdMember {
	t.Helper()
	var ld *testutil.EtcdMember
	testutil.Eventually(t, 30*time.Second, "an etcd leader", func() bool {
		for _, m := range e.Members {
			if m.IsLeader() {
				ld = m
				return true
			}
		}
		return false
	})
	return ld
}

// TestLeaseCluster: run --etcd on a 3-member cluster (TTL 20 s, with an
// election timeout of 2 s: an election on this loaded machine has taken
// over 7 s, docs/lease.md "How long a TTL must be"). The leader SIGKILLed
// and restarted costs no loss over a TTL (without a renewal the server
// would get SIGTERM 14 s after the last one); so does a member the
// etcd agent has a connection to SIGSTOPped for a TTL (the leader in round
// 0, a follower in round 1);
// 2 of 3 members SIGSTOPped stop the server before the lease can end, and
// after SIGCONT the next holder (which waited meanwhile) starts only after
// that server died, with a higher token; the old wrapper does not come back
// as a holder. 2 rounds.
func TestLeaseCluster(t *testing.T) {
	e := testutil.StartEtcd(t, 3)
	// 20 s: on a loaded 2-core machine, an election after the leader is
	// stopped has taken over 7 s, which a 10 s TTL cannot ride out.
	const ttl = 20 * time.Second
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/cluster", "--lease-ttl", "20s"}
	noLoss := func(round int, pid int, w *testutil.Proc, what string) {
		for end := time.Now().Add(ttl); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if !testutil.Alive(pid) {
				t.Fatalf("round %d: %s stopped the server:\n%s", round, what, w.Stderr())
			}
		}
	}
	for round := range 2 {
		leaderOf(t, e)
		a, b := testutil.DataDir(t), testutil.DataDir(t)
		w := startRun(t, nil, a, lf, leaseServer(false)...)
		pid, token, _, _ := leaseView(t, w)
		ld := leaderOf(t, e)
		ld.Kill()
		noLoss(round, pid, w, "the leader's death")
		ld.Restart()
		ld.WaitHealthy(60 * time.Second)
		m := talkedTo(t, agentOf(t, w.PID()), e, round == 0)
		m.Stop()
		noLoss(round, pid, w, "a stopped member")
		m.Cont()
		m.WaitHealthy(60 * time.Second)
		next := startRun(t, nil, b, append(lf, "--wait", "2m"), leaseServer(false)...)
		both := func() bool { return testutil.Alive(pid) && serverLine.MatchString(next.Stdout()) }
		waitingForLease(t, next)
		if both() {
			t.Fatalf("round %d: two servers at once: the waiter's started while the first ran:\n%s\n---\n%s", round, w.Stderr(), next.Stderr())
		}
		e.Members[0].Stop()
		e.Members[1].Stop()
		stopped := time.Now()
		testutil.Eventually(t, 60*time.Second, "the server's death", func() bool {
			if both() {
				t.Fatalf("round %d: two servers at once: the waiter's started while the first ran:\n%s\n---\n%s", round, w.Stderr(), next.Stderr())
			}
			return !testutil.Alive(pid)
		})
		dead := time.Since(stopped)
		e.Members[0].Cont()
		e.Members[1].Cont()
		// The old wrapper could not revoke (no quorum) and gave up within
		// its release budget: the lease ends by expiry, which etcd's new
		// leader puts off by a TTL and an election, and the waiter then
		// distrusts the unclean end for a TTL more. docs/lease.md's bound,
		// 2 × TTL + 3 elections + TTL/3 + 1 s, counted from the resume.
		npid, ntoken, _, _ := leaseViewWithin(t, next, 2*ttl+3*2*time.Second+ttl/3+time.Second+5*time.Second)
		started := time.Since(stopped)
		t.Logf("round %d: leader %s killed, member %s (leader %v) stopped: no loss; 2 of 3 stopped: server dead %v after, the next started %v after (TTL %v)",
			round, ld.Name, m.Name, round == 0, dead.Round(time.Millisecond), started.Round(time.Millisecond), ttl)
		// etcd 3.4.23's resumed leader may revoke the lease early (see
		// docs/lease.md): then the holder's watch on its key SIGKILLs the
		// server at once, before the 2 of 3 are stopped, and the waiter
		// may start at once after that death.
		early := strings.Contains(w.Stderr(), "etcd deleted the lock key")
		// A leader left alone answers renewals until it steps down, an
		// election timeout (2 s) after losing its majority.
		if !early && (dead >= ttl+2*time.Second || started <= dead) {
			t.Fatalf("round %d: server dead %v after the stop, next started %v after", round, dead, started)
		}
		if ntoken <= token {
			t.Fatalf("round %d: token %d after %d", round, ntoken, token)
		}
		want := 143
		if early {
			t.Logf("round %d: etcd ended the lease early after the stopped member resumed; the holder's watch killed the server", round)
			want = 137
		}
		if code := w.WaitExit(t, 30*time.Second); code != want {
			t.Fatalf("round %d: old wrapper exit %d:\n%s", round, code, w.Stderr())
		}
		if !testutil.Alive(npid) {
			t.Fatalf("round %d: the new server died:\n%s\n---\n%s", round, w.Stderr(), next.Stderr())
		}
		next.Cmd.Process.Signal(syscall.SIGTERM)
		if code := next.WaitExit(t, 30*time.Second); code != 143 {
			t.Fatalf("round %d: next wrapper exit %d:\n%s", round, code, next.Stderr())
		}
	}
}

// talkedTo returns a member of e that the process pid has an established
// TCP connection to: the leader (leader true) or a follower. It reads the
// process's sockets from /proc/PID/fd and their peers from
// /proc/PID/net/tcp.
func talkedTo(t *testing.T, pid int, e *testutil.EtcdCluster, leader bool) *testutil.EtcdMember {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		ld := leaderOf(t, e)
		ports := peerPorts(t, pid)
		for _, m := range e.Members {
			u := m.ClientURL[strings.LastIndex(m.ClientURL, ":")+1:]
			port, _ := strconv.Atoi(u)
			if ports[port] && (m == ld) == leader {
				return m
			}
		}
	}
	t.Fatalf("PID %d has no connection to a member (leader %v) of the cluster", pid, leader)
	return nil
}

// peerPorts returns the remote ports of pid's established TCP connections.
func peerPorts(t *testing.T, pid int) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.Trim(l[len("socket:"):], "[]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) < 10 || f[3] != "01" || !inodes[f[9]] {
				continue
			}
			rem := f[2][strings.LastIndex(f[2], ":")+1:]
			if p, err := strconv.ParseInt(rem, 16, 32); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// TestFUSELeaseTakeover: on the FUSE filesystem in local-only mode, the
// lease settles a takeover that the heartbeat rule (docs/nfs.md) would
// otherwise have to watch for. A holder on host alpha dies with its whole
// namespace (SIGKILL of its PID 1), leaving a record that is not stopped,
// with a fresh heartbeat and its lease key and token. A start on beta while
// that lease is still in etcd watches the heartbeat (--takeover-after 2s),
// then waits for the lease; a start on alpha once the dead holder's lease
// has ended skips the watch (--takeover-after 60s), the lease's proof
// logged. 2 rounds of both.
func TestFUSELeaseTakeover(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	_, _, a, b := mountHosts(t, fusefs.LocalOnly)
	const key = "/dirlockd/takeover"
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", key, "--lease-ttl", "3s", "--recheck", "300ms"}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(e.Endpoints(), ","), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	leaseGone := func() {
		testutil.Eventually(t, 30*time.Second, "the dead holder's lease to end", func() bool {
			r, err := cli.Get(context.Background(), key)
			return err == nil && len(r.Kvs) == 0
		})
	}
	// kill starts a holder on host, waits for its heartbeat, and kills its
	// namespace.
	kill := func(w *testutil.Proc, dir string) int64 {
		_, token, _, _ := leaseView(t, w)
		eventuallyLogged(t, w, 10*time.Second, "a heartbeat in the record", func() bool {
			r := recordOf(t, dir)
			return r.Extra["heartbeat"] != "" && r.Extra["fencing_token"] == strconv.FormatInt(token, 10)
		})
		syscall.Kill(childOf(w.PID()), syscall.SIGKILL)
		<-w.Done()
		return token
	}
	w := startRun(t, onHost("alpha"), a, lf, leaseServer(false)...)
	for round := range 2 {
		token := kill(w, a)
		// The lease is still in etcd: no proof, the watch decides.
		w = startRun(t, onHost("beta"), b, append(lf, "--takeover-after", "2s", "--wait", "60s"), leaseServer(false)...)
		_, btoken, _, _ := leaseView(t, w)
		if log := w.Stderr(); !strings.Contains(log, "did not move for 2s") || btoken <= token {
			t.Fatalf("round %d: beta's takeover while alpha's lease stood: token %d after %d, want a heartbeat watch:\n%s", round, btoken, token, log)
		}
		kill(w, b)
		leaseGone()
		started := time.Now()
		w = startRun(t, onHost("alpha"), a, append(lf, "--takeover-after", "60s"), leaseServer(false)...)
		_, atoken, _, _ := leaseView(t, w)
		took := time.Since(started)
		want := fmt.Sprintf("without watching its heartbeat: its lease on %s (fencing token %d) has ended", key, btoken)
		if log := w.Stderr(); !strings.Contains(log, want) || took > 30*time.Second || atoken <= btoken {
			t.Fatalf("round %d: alpha's takeover after beta's lease ended: %v, token %d after %d, want %q:\n%s", round, took, atoken, btoken, want, log)
		}
		t.Logf("round %d: takeover with the lease still in etcd watched 2s; after it ended, the start took %v with no watch (--takeover-after 60s)", round, took.Round(time.Millisecond))
	}
	syscall.Kill(childOf(w.PID()), syscall.SIGTERM)
	if code := w.WaitExit(t, 30*time.Second); code != 143 {
		t.Fatalf("last holder exit %d:\n%s", code, w.Stderr())
	}
}

// uptimeServer is a server for the hand-off test: it appends
// "start TOKEN HOST UPTIME" to the shared witness file when it starts and
// "end TOKEN HOST UPTIME" when SIGTERM stops it (/proc/uptime: one clock for
// every namespace of this machine, 10 ms steps).
func uptimeServer(witness string) []string {
	return []string{"sh", "-c", `w=` + witness + `; t=$DIRLOCKD_FENCING_TOKEN; h=$(hostname)
echo "start $t $h $(cut -d' ' -f1 /proc/uptime)" >> $w
trap 'echo "end $t $h $(cut -d" " -f1 /proc/uptime)" >> $w; exit 0' TERM
echo "pid=$$ token=$t key=$DIRLOCKD_LEASE_KEY ttl=$DIRLOCKD_LEASE_TTL"
while :; do sleep 0.05; done`}
}

func uptime(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// TestFUSELeaseHandOff: dirlockd run on two hosts (UTS/PID/IPC namespaces)
// over the FUSE filesystem in local-only mode, so only the lease keeps them
// apart; each host always has a wrapper waiting (--wait). 12 hand-offs, the
// holder stopped by a random one of: SIGTERM to its wrapper, SIGSTOP to its
// wrapper (the fence kills the server; a SIGKILL of a namespace's PID 1
// would kill the server itself), SIGKILL to its server. Judged by
// the servers' own start and end times and the test's observation of their
// deaths: never two servers at once, tokens strictly increasing in start
// order.
func TestFUSELeaseHandOff(t *testing.T) {
	e := testutil.StartEtcd(t, 1)
	_, backing, a, b := mountHosts(t, fusefs.LocalOnly)
	witness := filepath.Join(backing, "witness")
	lf := []string{"--etcd", e.Endpoints(), "--lease-key", "/dirlockd/handoff", "--lease-ttl", "3s", "--wait", "120s", "--stop-timeout", "10s"}
	hosts := []struct{ name, dir string }{{"alpha", a}, {"beta", b}}
	start := func(h int) *testutil.Proc {
		return startRun(t, onHost(hosts[h].name), hosts[h].dir, lf, uptimeServer(witness)...)
	}
	ws := []*testutil.Proc{start(0), start(1)}
	type life struct {
		token    int64
		host     string
		how      string
		observed float64 // uptime when the test saw it dead
	}
	var lives []life
	actions := []string{"TERM wrapper", "STOP wrapper", "KILL server"}
	counts := map[string]int{}
	var worst float64
	for i := range 12 {
		// The holder: the wrapper whose server has printed its line.
		var cur int
		var pid int
		var token int64
		deadline := time.Now().Add(60 * time.Second)
		for found := false; !found; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("hand-off %d: no server started within 60s:\n%s\n%s", i, ws[0].Stderr(), ws[1].Stderr())
			}
			for h, w := range ws {
				if m := serverLine.FindAllStringSubmatch(w.Stdout(), -1); len(m) > 0 {
					cur, found = h, true
					token, _ = strconv.ParseInt(m[0][2], 10, 64)
				}
			}
		}
		// The server's PID as we see it: the only descendant running sh.
		for _, d := range testutil.Descendants(ws[cur].PID()) {
			if c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d)); strings.TrimSpace(string(c)) == "sh" {
				pid = d
			}
		}
		if pid == 0 {
			t.Fatalf("hand-off %d: cannot find the server under %s's wrapper", i, hosts[cur].name)
		}
		how := actions[rand.IntN(len(actions))]
		counts[how]++
		wrapperPID := childOf(ws[cur].PID()) // dirlockd, PID 1 of its namespace
		hit, hitUp := time.Now(), uptime(t)
		switch how {
		case "TERM wrapper":
			syscall.Kill(wrapperPID, syscall.SIGTERM)
		case "STOP wrapper":
			syscall.Kill(wrapperPID, syscall.SIGSTOP)
		case "KILL server":
			syscall.Kill(pid, syscall.SIGKILL)
		}
		eventuallyLogged(t, ws[cur], 30*time.Second, "the server's death", func() bool { return !testutil.Alive(pid) })
		end := uptime(t) // seen dead: it ended before this
		if how == "KILL server" {
			end = hitUp // nothing of it runs once SIGKILL is sent
		}
		lives = append(lives, life{token: token, host: hosts[cur].name, how: how, observed: end})
		worst = max(worst, time.Since(hit).Seconds())
		if how == "STOP wrapper" {
			syscall.Kill(wrapperPID, syscall.SIGCONT)
		}
		<-ws[cur].Done()
		ws[cur] = start(cur)
	}
	for _, w := range ws {
		// The last wrapper started may not have become dirlockd yet.
		syscall.Kill(nsInit(t, w), syscall.SIGTERM)
		w.WaitExit(t, 30*time.Second)
	}
	// Judge by the witness file: each server's start, and its end (its own
	// line, or when the test saw it dead).
	raw, err := os.ReadFile(witness)
	if err != nil {
		t.Fatal(err)
	}
	type span struct {
		token      int64
		host, how  string
		start, end float64
	}
	var spans []*span
	byToken := map[int64]*span{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("witness line %q", line)
		}
		tok, _ := strconv.ParseInt(f[1], 10, 64)
		at, _ := strconv.ParseFloat(f[3], 64)
		switch f[0] {
		case "start":
			s := &span{token: tok, host: f[2], start: at, end: -1}
			spans = append(spans, s)
			byToken[tok] = s
		case "end":
			if s := byToken[tok]; s != nil {
				s.end = at
			}
		}
	}
	for _, l := range lives {
		if s := byToken[l.token]; s != nil {
			s.how = l.how
			if s.end < 0 || l.observed < s.end {
				s.end = l.observed
			}
		}
	}
	violations := 0
	for i := 1; i < len(spans); i++ {
		p, s := spans[i-1], spans[i]
		if s.token <= p.token {
			violations++
			t.Errorf("token %d (%s) started after token %d (%s): tokens must rise in start order", s.token, s.host, p.token, p.host)
		}
		if p.end < 0 || s.start < p.end {
			violations++
			t.Errorf("two servers at once: token %d on %s started at %.2f, token %d on %s (stopped by %s) ended at %.2f", s.token, s.host, s.start, p.token, p.host, p.how, p.end)
		}
	}
	t.Logf("%d hand-offs between 2 hosts (%v), %d servers started, worst time from the stop to the server's death %.2fs, %d violations",
		len(lives), counts, len(spans), worst, violations)
	if len(spans) < len(lives) {
		t.Fatalf("%d servers in the witness file, want at least %d", len(spans), len(lives))
	}
}
