package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStartTime(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n"
	got, err := parseStartTime([]byte(line), "stat")
	if err != nil || got != 987654 {
		t.Errorf("parseStartTime = %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "4242 no paren", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 zz"} {
		if _, err := parseStartTime([]byte(bad), "stat"); err == nil {
			t.Errorf("parseStartTime(%q) succeeded", bad)
		}
	}
}

func TestStartTimeAndAlive(t *testing.T) {
	me := os.Getpid()
	st, err := StartTime(me)
	if err != nil || st == 0 {
		t.Fatalf("StartTime(self) = %d, %v", st, err)
	}
	if !Alive(me, st) || !Alive(me, 0) || Alive(me, st+1) || Alive(0, 0) || Alive(-1, 0) {
		t.Error("Alive disagrees with our own start time")
	}
	if _, err := StartTime(1 << 30); err == nil {
		t.Error("StartTime of a PID beyond pid_max succeeded")
	}
}

func TestParseLocks(t *testing.T) {
	dev := unix.Mkdev(0xfd, 1)
	table := "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n" +
		"1: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF\n" +
		"2: OFDLCK ADVISORY  WRITE -1 fd:01:5678 0 EOF\n" +
		"3: POSIX  ADVISORY  WRITE 77 fd:01:56789 0 EOF\n" +
		"4: POSIX  ADVISORY  READ 78 fd:02:5678 0 EOF\n"
	got := parseLocks([]byte(table), dev, 5678)
	want := []Lock{{"FLOCK", "WRITE", 1234}, {"OFDLCK", "WRITE", -1}}
	if !slices.Equal(got, want) {
		t.Errorf("parseLocks = %+v, want %+v (waiters, other inodes and devices excluded)", got, want)
	}
}

func TestMapsSysV(t *testing.T) {
	maps := "7f00-7f01 r-xp 00000000 fd:01 1234 /usr/bin/x\n" +
		"7f10-7f11 rw-s 00000000 00:01 32768 /SYSV1e33440f (deleted)\n" +
		"7f20-7f21 r--s 00000000 00:01 40000 /SYSV00000000 (deleted)\n" +
		"7f30-7f31 r--s 00000000 00:01 40000 /SYSV00000000 (deleted)\n" +
		"7f40-7f41 r--s 00000000 00:01 32768 /SYSV1e33440f (deleted)\n"
	for _, c := range []struct {
		id       uint64
		writable bool
		readOnly int
	}{{32768, true, 1}, {40000, false, 2}, {1234, false, 0}, {3276, false, 0}} {
		if writable, readOnly := mapsSysV([]byte(maps), c.id); writable != c.writable || readOnly != c.readOnly {
			t.Errorf("mapsSysV(%d) = %v, %d; want %v, %d", c.id, writable, readOnly, c.writable, c.readOnly)
		}
	}
}

func TestLockHoldersAndLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	if hs, err := LockHolders(st.Dev, st.Ino); err != nil || len(hs) != 0 {
		t.Fatalf("holders of an unlocked file = %v, %v", hs, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// A child that inherits the descriptor shares the lock and is listed too.
	cmd := exec.Command("/bin/sleep", "30")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	hs, err := LockHolders(st.Dev, st.Ino)
	want := []int{os.Getpid(), cmd.Process.Pid}
	slices.Sort(want)
	if err != nil || !slices.Equal(hs, want) {
		t.Errorf("LockHolders = %v, %v; want %v", hs, err, want)
	}
	if !HoldsLock(cmd.Process.Pid, st.Dev, st.Ino) {
		t.Error("HoldsLock(child) = false")
	}
	locks, err := Locks(st.Dev, st.Ino)
	if err != nil || len(locks) != 1 || locks[0].Kind != "FLOCK" || locks[0].PID != os.Getpid() {
		t.Errorf("Locks = %+v, %v; want our FLOCK", locks, err)
	}
}

func TestWithEnvAndCmdline(t *testing.T) {
	token := "proc-test-" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("/bin/sleep", "30")
	cmd.Env = []string{"DIRLOCKD_TOKEN=" + token}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pids, err := WithEnv("DIRLOCKD_TOKEN="+token, "OTHER=x")
	if err != nil || len(pids) != 1 || pids[cmd.Process.Pid] != "DIRLOCKD_TOKEN="+token {
		t.Errorf("WithEnv = %v, %v; want {%d: the token}", pids, err, cmd.Process.Pid)
	}
	if pids, _ := WithEnv("DIRLOCKD_TOKEN=" + token[:len(token)-1]); len(pids) != 0 {
		t.Errorf("WithEnv matched a prefix of the value: %v", pids)
	}
	if c := Cmdline(cmd.Process.Pid); c != "/bin/sleep 30" {
		t.Errorf("Cmdline = %q", c)
	}
	if c := Cmdline(1 << 30); c != "?" {
		t.Errorf("Cmdline of no process = %q", c)
	}
}

func TestIdentity(t *testing.T) {
	b, err := BootID()
	if err != nil || len(b) != 36 {
		t.Errorf("BootID = %q, %v", b, err)
	}
	ns, err := Namespace(os.Getpid(), "pid")
	if err != nil || ns == 0 {
		t.Errorf("Namespace = %d, %v", ns, err)
	}
	if _, err := Namespace(1<<30, "pid"); err == nil {
		t.Error("Namespace of no process succeeded")
	}
}

// TestSearchOnePass asks one pass for several entries, files and a
// segment at once, with the cases a fast reader gets wrong: an environment
// larger than the reused buffer, a wanted key that is the tail of another
// entry, and a lock held through descriptor 0.
func TestSearchOnePass(t *testing.T) {
	tag := strconv.Itoa(os.Getpid())
	// 200 KiB before the entries (one string may not exceed 128 KiB).
	pad := strings.Repeat("x", 100<<10)
	a := exec.Command("/bin/sleep", "30")
	a.Env = []string{"PAD1=" + pad, "PAD2=" + pad, "DIRLOCKD_PIDFILE=/a/" + tag, "DIRLOCKD_TOKEN=t" + tag}
	b := exec.Command("/bin/sleep", "30")
	b.Env = []string{"XDIRLOCKD_PIDFILE=/b/" + tag, "DIRLOCKD_PIDFILE=/c/" + tag}
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	b.Stdin = f // descriptor 0
	for _, c := range []*exec.Cmd{a, b} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Process.Kill(); c.Wait() }()
	}
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	id := FileID{st.Dev, st.Ino}
	got, err := Search(Query{
		Env:    []string{"DIRLOCKD_PIDFILE=/a/" + tag, "DIRLOCKD_PIDFILE=/b/" + tag, "DIRLOCKD_PIDFILE=/c/" + tag, "DIRLOCKD_TOKEN=t" + tag},
		Locked: []FileID{id, {st.Dev, st.Ino + 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int{
		"DIRLOCKD_PIDFILE=/a/" + tag: {a.Process.Pid},
		"DIRLOCKD_PIDFILE=/c/" + tag: {b.Process.Pid},
		"DIRLOCKD_TOKEN=t" + tag:     {a.Process.Pid},
	}
	for e, w := range want {
		if !slices.Equal(got.Env[e], w) {
			t.Errorf("Env[%s] = %v, want %v", e, got.Env[e], w)
		}
	}
	if p := got.Env["DIRLOCKD_PIDFILE=/b/"+tag]; len(p) != 0 {
		t.Errorf("XDIRLOCKD_PIDFILE matched DIRLOCKD_PIDFILE: %v", p)
	}
	holders := []int{os.Getpid(), b.Process.Pid}
	slices.Sort(holders)
	if !slices.Equal(got.Holders[id], holders) {
		t.Errorf("Holders = %v, want %v (ours and the child's descriptor 0)", got.Holders[id], holders)
	}
}

func TestParseCreds(t *testing.T) {
	status := []byte("Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nUid:\t1001\t0\t0\t0\nGid:\t1001\t1001\t1001\t1001\n")
	if c, ok := parseCreds(status); !ok || c != (Creds{Real: 1001, Effective: 0}) {
		t.Errorf("parseCreds = %+v, %v; want real 1001, effective 0", c, ok)
	}
	if _, ok := parseCreds([]byte("Name:\tx\n")); ok {
		t.Error("parseCreds of a status without Uid: ok")
	}
}

// TestSearchCreds: a pass that finds a process by its environment also
// says who it runs as, as the kernel records it.
func TestSearchCreds(t *testing.T) {
	entry := "DLTEST_CREDS=" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("/bin/sleep", "30")
	cmd.Env = []string{entry}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var f *Found
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if f, err = Search(Query{Env: []string{entry}}); err != nil {
			t.Fatal(err)
		}
		if len(f.Env[entry]) > 0 {
			break
		}
	}
	pid := cmd.Process.Pid
	if !slices.Equal(f.Env[entry], []int{pid}) || f.Creds[pid] != (Creds{Real: 65534, Effective: 65534}) {
		t.Errorf("Search: env %v creds %+v; want [%d] running as 65534", f.Env[entry], f.Creds, pid)
	}
}
