package integration

// The attacks of issue 17, run for real by an unprivileged user that each
// test creates (useradd) and removes (userdel): its processes and segments
// are started by the test, and ended by their PIDs and ids. Root runs
// dirlockd, as on a database host with shell users or a CI runner.

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// hostile is an unprivileged local user and a scratch directory under /tmp,
// owned by root and reachable by everybody, holding a copy of the test
// binary that the user can run as a helper.
type hostile struct {
	name     string
	uid, gid uint32
	scratch  string
	bin      string
}

func newHostile(t *testing.T) *hostile {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the hostile-user tests run as root, as CI does: they create a user")
	}
	u := testutil.NewUser(t, "dlhostile")
	h := &hostile{name: u.Name, uid: uint32(u.UID), gid: uint32(u.GID)}
	var err error
	if h.scratch, err = os.MkdirTemp("/tmp", "dlhostile-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(h.scratch) })
	if err := os.Chmod(h.scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	h.bin = filepath.Join(h.scratch, "helper")
	if err := os.WriteFile(h.bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

// command prepares name with args to run as the user, with env as its
// whole environment.
func (h *hostile) command(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.uid, Gid: h.gid, Groups: []uint32{}}}
	cmd.Env = env
	cmd.Dir = "/"
	return cmd
}

// start starts cmd, its stdout piped to the test, and kills it by its PID
// when the test ends.
func (h *hostile) start(t *testing.T, cmd *exec.Cmd) *testutil.Proc {
	t.Helper()
	cmd.Stderr = os.Stderr
	return testutil.Start(t, cmd)
}

// helper starts the test binary as helper name, as the user.
func (h *hostile) helper(t *testing.T, name string, args ...string) *testutil.Proc {
	t.Helper()
	return h.start(t, h.command([]string{testutil.HelperEnv + "=" + name}, h.bin, args...))
}

// rootDataDir makes a data directory for root, 0700, in a directory of
// root's that everybody can reach (the user must be able to stat it, as
// anybody can on a real host).
func (h *hostile) rootDataDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(h.scratch, "data-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// forgedHeader is what anybody can write into a segment: dirlockd's header
// layout (docs/format.md) naming the directory with identity id.
func forgedHeader(id shm.Identity) string {
	b := make([]byte, 88)
	le := binary.LittleEndian
	le.PutUint32(b[8:], shm.LayoutVersion)
	le.PutUint64(b[16:], 1)
	le.PutUint64(b[48:], id.Dev)
	le.PutUint64(b[56:], id.Ino)
	le.PutUint64(b[64:], uint64(time.Now().UnixNano()))
	le.PutUint64(b[0:], shm.Magic)
	return hex.EncodeToString(b)
}

// hostileSegments is the helper that makes segments as the user: ARGS are
// attach|leave, a count, the first key (decimal), and a header in hex ("-"
// for none). It makes count segments of mode 0644 at consecutive keys
// (skipping IPC_PRIVATE), writes the header into each, prints "ids ID...",
// and then either exits, leaving them unattached, or stays attached until
// its stdin closes.
func hostileSegments(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: attach|leave COUNT KEY HEADER")
		return 2
	}
	n, _ := strconv.Atoi(args[1])
	key, _ := strconv.ParseInt(args[2], 10, 64)
	var hdr []byte
	if args[3] != "-" {
		hdr, _ = hex.DecodeString(args[3])
	}
	var ids []string
	for k := uint32(key); len(ids) < n; k++ {
		if k == 0 {
			continue
		}
		id, err := unix.SysvShmGet(int(int32(k)), shm.Size, unix.IPC_CREAT|unix.IPC_EXCL|0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "shmget(%#x): %v\n", k, err)
			return 1
		}
		mem, err := unix.SysvShmAttach(id, 0, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "shmat(%d): %v\n", id, err)
			return 1
		}
		copy(mem, hdr)
		if args[0] == "leave" {
			unix.SysvShmDetach(mem)
		}
		ids = append(ids, strconv.Itoa(id))
	}
	fmt.Println("ids " + strings.Join(ids, " "))
	if args[0] == "attach" {
		io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// hostileExchange is the helper that swaps two names of a directory it owns
// with renameat2(RENAME_EXCHANGE) in a loop: ARGS are the two paths and the
// most rounds to run. It stops early on SIGTERM, and prints "rounds N" at
// the end.
func hostileExchange(args []string) int {
	max, _ := strconv.Atoi(args[2])
	stopped := make(chan os.Signal, 1)
	signal.Notify(stopped, syscall.SIGTERM)
	fmt.Println("started")
	n := 0
loop:
	for ; n < max; n++ {
		if n%256 == 0 {
			select {
			case <-stopped:
				break loop
			default:
			}
		}
		if err := unix.Renameat2(unix.AT_FDCWD, args[0], unix.AT_FDCWD, args[1], unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintln(os.Stderr, "renameat2:", err)
			return 1
		}
	}
	fmt.Printf("rounds %d\n", n)
	return 0
}

// removeSegments removes the user's segments ids when the test ends (root
// may: the test made them through the user).
func removeSegments(t *testing.T, ids []int) {
	t.Cleanup(func() {
		for _, id := range ids {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		}
	})
}

func parseIDs(t *testing.T, line string) []int {
	t.Helper()
	f := strings.Fields(line)
	var ids []int
	for _, s := range f {
		id, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("helper said %q", line)
		}
		ids = append(ids, id)
	}
	return ids
}

// runTrue runs "dirlockd run -D dir -- true" as root and returns its exit
// code and log.
func runTrue(t *testing.T, dir string) (int, string) {
	t.Helper()
	code, _, stderr := dirlockd(t, "run", "-D", dir, "--", "true")
	return code, stderr
}

// TestHostileEnvironment: a process of another user carrying
// DIRLOCKD_PIDFILE (and a made-up DIRLOCKD_TOKEN) for root's directory is
// no survivor, on a fresh directory and after unclean stops (a record with
// a token). Before issue 17 every start exited 76. Attempts: 1 fresh start
// and 3 starts after SIGKILLed holders, each with a check.
func TestHostileEnvironment(t *testing.T) {
	h := newHostile(t)
	dir := h.rootDataDir(t)
	path := filepath.Join(dir, pidfile.DefaultName)
	fake := h.start(t, h.command([]string{"DIRLOCKD_PIDFILE=" + path,
		"DIRLOCKD_TOKEN=00112233445566778899aabbccddeeff"}, "/bin/sleep", "1000"))
	testutil.Eventually(t, 5*time.Second, "the look-alike to exec sleep", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", fake.PID()))
		return strings.Contains(string(b), "DIRLOCKD_PIDFILE="+path)
	})
	attempt := func(what string) {
		t.Helper()
		if code, r := check(t, dir); code != exitcode.CheckFree {
			t.Errorf("%s: check exit %d, %+v; want free (the look-alike of %s is no survivor)", what, code, r, h.name)
		}
		if code, log := runTrue(t, dir); code != 0 {
			t.Errorf("%s: run exit %d; want 0: %s", what, code, log)
		}
	}
	attempt("fresh directory")
	for i := range 3 {
		w := startRun(t, nil, dir, nil, "/bin/sleep", "1000")
		r := waitHeld(t, dir, "", 10*time.Second)
		killWait(t, w.PID())
		killWait(t, r.ChildPID)
		attempt(fmt.Sprintf("after unclean stop %d", i+1))
	}
	if !fake.Alive() {
		t.Errorf("the look-alike %d is gone: nothing of %s's may be killed", fake.PID(), h.name)
	}
}

// TestHostileSegments: segments that another user makes at root's keys, a
// copy of the header in them, never count, are never removed and never make
// a start fail. Before issue 17: an attached forgery made every start exit
// 76, a full window 70, and an unattached forgery was removed by root.
func TestHostileSegments(t *testing.T) {
	h := newHostile(t)
	for _, c := range []struct {
		name   string
		mode   string
		count  int
		header bool
		starts int
	}{
		{"squatted key, copied header, attached", "attach", 1, true, 3},
		{"forged header, unattached", "leave", 1, true, 3},
		{"key window filled", "leave", shm.ProbeLimit, false, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := h.rootDataDir(t)
			id, err := shm.DirIdentity(dir)
			if err != nil {
				t.Fatal(err)
			}
			hdr := "-"
			if c.header {
				hdr = forgedHeader(id)
			}
			p := h.helper(t, "hostile-segments", c.mode, strconv.Itoa(c.count), strconv.Itoa(shm.BaseKey(id)), hdr)
			ids := parseIDs(t, strings.TrimPrefix(p.Expect(t, "ids "), " "))
			removeSegments(t, ids)
			if len(ids) != c.count {
				t.Fatalf("helper made %d segments, want %d", len(ids), c.count)
			}
			for i := range c.starts {
				if code, r := check(t, dir); code != exitcode.CheckFree {
					t.Errorf("start %d: check exit %d, %+v; want free", i+1, code, r)
				}
				if code, log := runTrue(t, dir); code != 0 {
					t.Errorf("start %d: run exit %d; want 0: %s", i+1, code, log)
				}
			}
			for _, sid := range ids {
				s, err := shm.Stat(sid)
				if err != nil {
					t.Errorf("%s's segment %d: %v; want it left alone", h.name, sid, err)
					continue
				}
				if want := map[string]int{"attach": 1, "leave": 0}[c.mode]; s.Nattch != want || s.Removed {
					t.Errorf("%s's segment %d: %+v; want %d attached, not removed", h.name, sid, s, want)
				}
			}
		})
	}
}

// TestHostileRenameRace: a user who owns a directory on the path to root's
// data directory exchanges the data directory with a symbolic link to a
// directory of its own, in a loop (renameat2 RENAME_EXCHANGE), while root
// starts servers in pairs. Before issue 17, some starts locked a root-owned
// pidfile in the user's directory, and some pairs ran two servers at once.
// Now every start is refused (78), whatever the race: the path runs through
// a directory another user may change, or leads to the user's directory,
// which root does not hold. A
// witness log of the servers' intervals shows no overlap, and no file of
// root's appears in the user's directory.
func TestHostileRenameRace(t *testing.T) {
	const pairs = 25
	h := newHostile(t)
	parent := filepath.Join(h.scratch, "P")
	data, own, evil := filepath.Join(parent, "data"), filepath.Join(parent, "own"), filepath.Join(parent, "evil")
	for _, d := range []string{parent, own} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(h.uid), int(h.gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(data, 0o700); err != nil { // root's, in the user's directory
		t.Fatal(err)
	}
	if err := os.Symlink("own", evil); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(evil, int(h.uid), int(h.gid)); err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir() // root's alone
	log := filepath.Join(logDir, "intervals")
	server := fmt.Sprintf(`echo "start $(date +%%s%%N) $$" >> %s; sleep 0.3; echo "end $(date +%%s%%N) $$" >> %s`, log, log)

	ex := h.helper(t, "hostile-exchange", data, evil, "100000000")
	ex.Expect(t, "started")
	codes, checks := map[int]int{}, map[int]int{}
	for range pairs {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 2 {
			wg.Go(func() {
				cmd := exec.Command(bin, "run", "-D", data, "--", "/bin/sh", "-c", server)
				cmd.Run()
				mu.Lock()
				codes[cmd.ProcessState.ExitCode()]++
				mu.Unlock()
			})
		}
		wg.Wait()
		// check answers about the directory the path led to: root's
		// (invalid: its path runs through the user's directory) or,
		// when the exchange has put the link in its place, the user's
		// own (which root may inspect, and never hold).
		code, _, _ := dirlockd(t, "check", "-D", data)
		checks[code]++
	}
	t.Logf("check exit codes during the race: %v", checks)
	if checks[exitcode.CheckHeld]+checks[exitcode.CheckOrphans] > 0 {
		t.Errorf("check during the race found a holder or survivors: %v", checks)
	}
	ex.Cmd.Process.Signal(syscall.SIGTERM)
	rounds := ex.Expect(t, "rounds ")
	t.Logf("%d starts in pairs against %s exchanges: exit codes %v", 2*pairs, rounds, codes)
	if codes[exitcode.Invalid] != 2*pairs {
		t.Errorf("exit codes %v; want all %d starts refused with %d", codes, 2*pairs, exitcode.Invalid)
	}

	// No two servers at once.
	b, _ := os.ReadFile(log)
	type iv struct{ start, end int64 }
	open := map[string]int64{}
	var ivs []iv
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		at, _ := strconv.ParseInt(f[1], 10, 64)
		if f[0] == "start" {
			open[f[2]] = at
		} else {
			ivs = append(ivs, iv{open[f[2]], at})
		}
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].start < ivs[j].start })
	overlaps := 0
	for i := 1; i < len(ivs); i++ {
		if ivs[i].start < ivs[i-1].end {
			overlaps++
		}
	}
	t.Logf("server intervals: %d, overlaps: %d", len(ivs), overlaps)
	if overlaps > 0 {
		t.Errorf("%d overlapping server intervals: two servers at once", overlaps)
	}
	// Nothing of root's in the user's directory, wherever the exchange
	// left it.
	for _, d := range []string{own, data} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(d, e.Name()), &st) == nil && st.Uid == 0 && isUsers(d, h.uid) {
				t.Errorf("root created %s in %s's directory", filepath.Join(d, e.Name()), h.name)
			}
		}
	}
}

// isUsers says whether directory d is owned by uid.
func isUsers(d string, uid uint32) bool {
	var st unix.Stat_t
	return unix.Stat(d, &st) == nil && st.Uid == uid
}

// TestPseudoFilesystemRefused: check and run agree that a directory of a
// pseudo filesystem is invalid (before issue 17, check said free where run
// said 78).
func TestPseudoFilesystemRefused(t *testing.T) {
	for _, dir := range []string{"/proc", "/sys"} {
		if code, _, _ := dirlockd(t, "check", "-D", dir); code != exitcode.CheckInvalid {
			t.Errorf("check -D %s: exit %d; want %d", dir, code, exitcode.CheckInvalid)
		}
		if code, log := runTrue(t, dir); code != exitcode.Invalid || !strings.Contains(log, "pseudo filesystem") {
			t.Errorf("run -D %s: exit %d, %s; want %d naming a pseudo filesystem", dir, code, log, exitcode.Invalid)
		}
	}
}

// TestShmmniNamed: a start refused a segment because kernel.shmmni is
// exhausted says so, naming the sysctl, and is no "full filesystem"
// (which would be 78). The limit is set to 0 in an IPC namespace of the
// test's own, where it is a per-namespace setting.
func TestShmmniNamed(t *testing.T) {
	dir := testutil.DataDir(t)
	cmd := exec.Command("unshare", "--ipc", "--", "/bin/sh", "-c",
		`echo 0 > /proc/sys/kernel/shmmni && exec "$0" run -D "$1" -- true`, bin, dir)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitcode.Internal || !strings.Contains(string(out), "kernel.shmmni") {
		t.Errorf("run with kernel.shmmni=0: exit %d, %s; want %d naming kernel.shmmni", code, out, exitcode.Internal)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "no space left") || strings.Contains(sc.Text(), "filesystem") {
			t.Errorf("message speaks of a filesystem: %s", sc.Text())
		}
	}
}
