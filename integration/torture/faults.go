package torture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/proc"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

// StorageFaults: ENOSPC, read-only remounts, the data directory removed or
// renamed under a holder.
func StorageFaults() []Scenario {
	return []Scenario{
		{Name: "storage: ENOSPC before the first record", Run: storageENOSPCFirst},
		{Name: "storage: ENOSPC over a previous record", Run: storageENOSPCPrevious},
		{Name: "storage: inodes exhausted", Run: storageInodes},
		{Name: "storage: read-only remount", Run: storageReadOnly},
		{Name: "storage: data dir renamed under a holder", Run: func(e *Env) Result { return storageDirGone(e, false) }},
		{Name: "storage: data dir removed under a holder", Run: func(e *Env) Result { return storageDirGone(e, true) }},
	}
}

// BadInputs: malformed pidfiles, wrong file types, owners and modes, foreign
// segments, segments removed under a holder, bad command lines.
func BadInputs() []Scenario {
	return []Scenario{
		{Name: "bad input: malformed pidfiles", Run: badPidfiles},
		{Name: "bad input: wrong types, owners, modes", Run: badObjects},
		{Name: "bad input: foreign segments at every key", Run: badForeignSegments},
		{Name: "bad input: segment removed under a holder", Run: badSegmentRemoved},
		{Name: "bad input: shm_rmid_forced IPC namespace", Run: badRmidForced},
		{Name: "bad input: bad command lines", Run: badCommandLines},
	}
}

// panicked reports whether output shows a Go panic or runtime crash.
func panicked(out string) bool {
	return strings.Contains(out, "panic") || strings.Contains(out, "goroutine ")
}

// failedCleanly says what is wrong with a failed start, or "": a
// non-zero exit status of its own (not a signal, not the harness's
// timeout), no crash, and a message containing every one of want.
func failedCleanly(code int, out string, want ...string) string {
	switch {
	case code == 0:
		return "exit 0, want a failure"
	case code < 0 || code >= 128:
		return fmt.Sprintf("exit %d: killed or crashed, want a clean failure", code)
	case panicked(out):
		return fmt.Sprintf("exit %d with a crash in the output", code)
	}
	low := strings.ToLower(out)
	for _, w := range want {
		if !strings.Contains(low, strings.ToLower(w)) {
			return fmt.Sprintf("exit %d, but the message does not say %q", code, w)
		}
	}
	return ""
}

// mountTmpfs mounts a fresh tmpfs with options opts under the scratch
// directory. The returned function unmounts it (lazily, if it is busy).
func mountTmpfs(e *Env, opts string) (string, func(), error) {
	e.n++
	mnt := filepath.Join(e.Work, fmt.Sprintf("tmpfs%d", e.n))
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return "", nil, err
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return "", nil, fmt.Errorf("mount -t tmpfs -o %s %s: %w", opts, mnt, err)
	}
	return mnt, func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			e.Logf("umount %s: %v; detaching it", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				e.Logf("umount -l %s: %v", mnt, err)
			}
		}
	}, nil
}

// fill writes path until the filesystem is full.
func fill(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for range 1 << 20 {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return nil
			}
			return err
		}
	}
	return errors.New("never full")
}

// noHolders checks that nobody holds a lock on the pidfile at path, if it
// exists.
func noHolders(r *Result, what, path string) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return
	}
	if hs, err := proc.LockHolders(st.Dev, st.Ino); err != nil || len(hs) > 0 {
		r.fail("%s: processes %v (%v) still hold %s", what, hs, err, path)
	}
}

// reap kills, by PID, every process carrying token in its environment
// and returns how many there were.
func reap(token string) int {
	if token == "" {
		return 0
	}
	found, _ := proc.WithEnv(interlock.TokenEnv + "=" + token)
	delete(found, os.Getpid())
	for p := range found {
		Kill(p)
	}
	return len(found)
}

// underHolder starts argv (a "dirlockd run", or a command that execs it) in
// the background and, once it holds dir, runs fn with check's report; fn
// returns the holder's token as soon as it knows it. Then it kills the
// wrapper and reaps, by that token, whatever of the holder is left: a
// violation, since the wrapper must have stopped its server. It reports false,
// with a violation, when the wrapper cannot start.
func underHolder(e *Env, r *Result, what, dir string, argv []string, fn func(w *Proc, rep Report) (token string)) bool {
	w, err := start(e, argv[0], argv[1:], e.WorkerEnv())
	if err != nil {
		r.fail("set-up: %v", err)
		return false
	}
	var token string
	defer func() {
		w.kill()
		if n := reap(token); n > 0 {
			r.fail("%s: %d process(es) of the holder left behind (killed)", what, n)
		}
	}()
	rep, err := waitHeld(e, dir, w, 10*time.Second)
	if err != nil {
		r.fail("%s: %v", what, err)
		return true
	}
	token = fn(w, rep)
	return true
}

// onTmpfs runs fn on a fresh tmpfs mounted with opts, and unmounts it. It
// reports false, with a violation, when the mount fails.
func onTmpfs(e *Env, r *Result, opts string, fn func(mnt string)) bool {
	mnt, umount, err := mountTmpfs(e, opts)
	if err != nil {
		r.fail("set-up: %v", err)
		return false
	}
	defer umount()
	fn(mnt)
	return true
}

// codeCounts renders a count of exit statuses for the notes.
func codeCounts(codes map[int]int) string {
	var ks []int
	for k := range codes {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var s []string
	for _, k := range ks {
		s = append(s, fmt.Sprintf("%d×%d", k, codes[k]))
	}
	return strings.Join(s, " ")
}

// storageENOSPCFirst: the filesystem is full before the first start, so the
// pidfile can be created but its first block cannot be written.
func storageENOSPCFirst(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want, codes := 0, map[int]int{}
	for i := range max(2, e.Scale.Iterations/8) {
		ok := onTmpfs(e, &r, "size=64k,mode=0700", func(mnt string) {
			dir, filler := filepath.Join(mnt, "data"), filepath.Join(mnt, "filler")
			if err := os.Mkdir(dir, 0o700); err != nil {
				r.fail("set-up: %v", err)
				return
			}
			if err := fill(filler); err != nil {
				r.fail("set-up: fill: %v", err)
				return
			}
			what := fmt.Sprintf("round %d, filesystem full", i)
			r.Faults++
			r.Iterations++
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			codes[code]++
			if why := failedCleanly(code, out, "no space"); why != "" {
				r.fail("%s: %s: %s", what, why, out)
			}
			noSegmentsDir(&r, what, dir)
			path := pidfilePath(dir)
			noHolders(&r, what, path)
			if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
				if _, err := pidfile.Parse(b); err != nil {
					r.fail("%s: a failed start left a torn pidfile (%v): %q", what, err, b)
				}
			}
			if code, out := e.Dirlockd(nil, "check", "-D", dir); code != 0 {
				r.fail("%s: check after the failed start: exit %d: %s", what, code, out)
			}
			if err := os.Remove(filler); err != nil {
				r.fail("set-up: %v", err)
				return
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
				r.fail("round %d, space freed: run exited %d, want 0: %s", i, code, out)
			} else {
				want++
			}
			noSegmentsDir(&r, what+", then freed", dir)
		})
		if !ok {
			break
		}
	}
	r = verify(w, r, want, "")
	r.Notes = fmt.Sprintf("failed starts exit %s; all rerun OK once freed", codeCounts(codes))
	return r
}

// storageENOSPCPrevious: a previous holder's record (a clean release, or a
// holder killed right after writing it) is on a filesystem that then fills
// up; a new start must succeed or fail cleanly, and never tear the record.
func storageENOSPCPrevious(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want, succeeded, failed := 0, 0, 0
	for i := range max(2, e.Scale.Iterations/8) {
		crashed := i%2 == 1
		ok := onTmpfs(e, &r, "size=64k,mode=0700", func(mnt string) {
			dir, filler := filepath.Join(mnt, "data"), filepath.Join(mnt, "filler")
			if err := os.Mkdir(dir, 0o700); err != nil {
				r.fail("set-up: %v", err)
				return
			}
			what := fmt.Sprintf("round %d", i)
			r.Iterations++
			if crashed {
				// The faultinject build kills itself right after its
				// record is written: a holder that died holding.
				code, out := e.Dirlockd([]string{interlock.FaultEnv + "=" + strconv.Itoa(int(interlock.StepRecordWritten))}, "run", "-D", dir, "--", "true")
				if code != -1 {
					r.fail("%s: set-up: the fault-injected start exited %d, want killed: %s", what, code, out)
				}
				what += " (previous holder crashed)"
			} else {
				if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
					r.fail("%s: first run exited %d: %s", what, code, out)
					return
				}
				want++
				what += " (previous holder released)"
			}
			prev, before, err := readPidfile(dir)
			if err != nil {
				r.fail("%s: set-up: previous record unreadable: %v", what, err)
				return
			}
			if err := fill(filler); err != nil {
				r.fail("set-up: fill: %v", err)
				return
			}
			r.Faults++
			r.Iterations++
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if code == 0 {
				succeeded++
				want++
				if crashed && !strings.Contains(out, "did not shut down cleanly") {
					r.fail("%s: takeover of a crashed holder's record not reported: %s", what, out)
				}
			} else {
				failed++
				if why := failedCleanly(code, out, "no space"); why != "" {
					r.fail("%s, filesystem full: %s: %s", what, why, out)
				}
			}
			rec, after, err := readPidfile(dir)
			switch {
			case err != nil && !bytes.Equal(after, before):
				r.fail("%s: the record was left torn (%v): %q (was %q)", what, err, after, before)
			case code == 0 && (rec == nil || rec.Status != pidfile.Stopped || rec.Token == prev.Token):
				r.fail("%s: after a successful run the record is not the new holder's, released: %q", what, after)
			case code != 0 && !bytes.Equal(after, before):
				r.fail("%s: a failed start changed the previous record: %q (was %q)", what, after, before)
			}
			noSegmentsDir(&r, what, dir)
			noHolders(&r, what, pidfilePath(dir))
			os.Remove(filler)
		})
		if !ok {
			break
		}
	}
	r = verify(w, r, want, "")
	r.Notes = fmt.Sprintf("full disk over a previous record (clean and crashed): %d rewrote it in its page, %d failed cleanly; never torn", succeeded, failed)
	return r
}

// storageInodes: no inode left for the pidfile.
func storageInodes(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want := 0
	for i := range max(2, e.Scale.Iterations/8) {
		ok := onTmpfs(e, &r, "size=1m,nr_inodes=16,mode=0700", func(mnt string) {
			dir := filepath.Join(mnt, "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				r.fail("set-up: %v", err)
				return
			}
			var fillers []string
			for n := 0; ; n++ {
				p := filepath.Join(mnt, fmt.Sprintf("inode%d", n))
				f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if errors.Is(err, unix.ENOSPC) {
					break
				}
				if err != nil || n > 100 {
					r.fail("set-up: cannot use up the inodes: %v", err)
					return
				}
				f.Close()
				fillers = append(fillers, p)
			}
			what := fmt.Sprintf("round %d, no inode left", i)
			r.Faults++
			r.Iterations++
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if why := failedCleanly(code, out, "cannot open pidfile", "no space"); why != "" || code != 78 {
				r.fail("%s: exit %d, want 78 saying the pidfile cannot be created for lack of space (%s): %s", what, code, why, out)
			}
			if _, err := os.Lstat(pidfilePath(dir)); err == nil {
				r.fail("%s: a pidfile appeared", what)
			}
			noSegmentsDir(&r, what, dir)
			os.Remove(fillers[len(fillers)-1])
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
				r.fail("round %d, an inode freed: run exited %d, want 0: %s", i, code, out)
			} else {
				want++
			}
		})
		if !ok {
			break
		}
	}
	r = verify(w, r, want, "")
	r.Notes = "exit 78 naming the pidfile and ENOSPC; OK once an inode is freed"
	return r
}

// storageReadOnly: the filesystem is remounted read-only after a clean run.
func storageReadOnly(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want := 0
	for i := range max(2, e.Scale.Iterations/8) {
		ok := onTmpfs(e, &r, "size=1m,mode=0700", func(mnt string) {
			dir, fresh := filepath.Join(mnt, "data"), filepath.Join(mnt, "fresh")
			for _, d := range []string{dir, fresh} {
				if err := os.Mkdir(d, 0o700); err != nil {
					r.fail("set-up: %v", err)
					return
				}
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
				r.fail("round %d: first run exited %d: %s", i, code, out)
				return
			}
			want++
			_, before, err := readPidfile(dir)
			if err != nil {
				r.fail("round %d: record after a clean run unreadable: %v", i, err)
				return
			}
			if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				r.fail("set-up: remount ro: %v", err)
				return
			}
			defer unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, "")
			r.Faults++
			for _, d := range []string{dir, fresh} {
				what := fmt.Sprintf("round %d, read-only, %s", i, filepath.Base(d))
				r.Iterations += 3
				code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, d, w)...)
				if why := failedCleanly(code, out, "read-only"); why != "" || code != 78 {
					r.fail("%s: run: exit %d, want 78 saying read-only (%s): %s", what, code, why, out)
				}
				if code, rep, out := check(e, d); code != 0 || rep.State != "free" {
					r.fail("%s: check cannot inspect a read-only directory: exit %d: %s", what, code, out)
				}
				if code, out := e.Dirlockd(nil, "status", "-D", d); code != 3 {
					r.fail("%s: status: exit %d, want 3 (not running): %s", what, code, out)
				}
			}
			if _, after, _ := readPidfile(dir); !bytes.Equal(after, before) {
				r.fail("round %d: the record changed on a read-only filesystem: %q (was %q)", i, after, before)
			}
			if _, err := os.Lstat(pidfilePath(fresh)); err == nil {
				r.fail("round %d: a pidfile appeared on a read-only filesystem", i)
			}
			if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				r.fail("set-up: remount rw: %v", err)
				return
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...); code != 0 {
				r.fail("round %d, read-write again: run exited %d: %s", i, code, out)
			} else {
				want++
			}
			noSegmentsDir(&r, fmt.Sprintf("round %d", i), dir)
		})
		if !ok {
			break
		}
	}
	r = verify(w, r, want, "")
	r.Notes = "run exit 78 \"read-only\", record unchanged; check and status still inspect; OK after remount rw"
	return r
}

// storageDirGone: the data directory is renamed, or removed, under a
// running holder; the recheck must find out and the wrapper stop its server.
func storageDirGone(e *Env, remove bool) Result {
	const recheck = 200 * time.Millisecond
	const bound = 2 * time.Second
	var r Result
	var worst time.Duration
	for i := range max(2, e.Scale.Iterations/8) {
		dir := e.DataDir()
		what := fmt.Sprintf("round %d", i)
		argv := append([]string{e.Bin}, runArgs(dir, []string{"--recheck", recheck.String()}, e.WorkerArgs("sleep")...)...)
		ok := underHolder(e, &r, what, dir, argv, func(w *Proc, rep Report) (token string) {
			rec, _, err := readPidfile(dir)
			if err != nil {
				r.fail("%s: the holder's record: %v", what, err)
				return
			}
			token = rec.Token
			id, err := shm.DirIdentity(dir)
			if err != nil {
				r.fail("%s: %v", what, err)
				return
			}
			moved := dir + ".moved"
			start := time.Now()
			if remove {
				err = os.RemoveAll(dir)
			} else {
				err = os.Rename(dir, moved)
			}
			if err != nil {
				r.fail("set-up: %v", err)
				return
			}
			r.Faults++
			r.Iterations++
			if !stopsAfterLoss(&r, w, what, "its data directory went", start, bound, recheck, &worst) {
				return
			}
			if !WaitDead(rep.ChildPID, 2*time.Second) {
				r.fail("%s: the server (PID %d) still runs", what, rep.ChildPID)
			}
			noSegments(&r, what, id)
			if !remove {
				if rec, _, err := readPidfile(moved); err != nil || rec.Status != pidfile.Stopped || rec.Token != token {
					r.fail("%s: the moved directory's record is not the holder's, released: %v %+v", what, err, rec)
				}
				if code, out := e.Dirlockd(nil, "check", "-D", moved); code != 0 {
					r.fail("%s: check of the moved directory: exit %d: %s", what, code, out)
				}
			}
			return
		})
		if !ok {
			break
		}
	}
	r.Notes = fmt.Sprintf("recheck %v; server stopped and wrapper exited within %v at worst", recheck, worst.Round(time.Millisecond))
	return r
}

// stopsAfterLoss checks that the wrapper w, whose interlock was broken at
// start (cause says how), stops its server and exits 143 after "interlock is
// lost", within bound, and updates worst. It reports false when the wrapper
// still runs 10s later.
func stopsAfterLoss(r *Result, w *Proc, what, cause string, start time.Time, bound, recheck time.Duration, worst *time.Duration) bool {
	code, exited := w.wait(10 * time.Second)
	took := time.Since(start)
	*worst = max(*worst, took)
	if !exited {
		r.fail("%s: the wrapper still runs 10s after %s: %s", what, cause, w.output())
		return false
	}
	if took > bound {
		r.fail("%s: the wrapper took %v to stop, want within %v (recheck %v)", what, took, bound, recheck)
	}
	if out := w.output(); code != 128+int(syscall.SIGTERM) || !strings.Contains(out, "interlock is lost") || panicked(out) {
		r.fail("%s: exit %d, want 143 (server stopped) after \"interlock is lost\": %s", what, code, out)
	}
	return true
}

// foreignRecord is a plausible record of a holder on another boot.
func foreignRecord(dir string) *pidfile.Record {
	return &pidfile.Record{PID: 4242, DataDir: dir, StartTime: time.Now().UTC(), BootID: "00000000-0000-4000-8000-000000000000",
		Hostname: "elsewhere", PIDNS: 4026531836, PIDStart: 123456, ShmKey: 0, ShmID: -1, LockMethod: pidfile.Flock,
		Status: pidfile.Ready, Token: strings.Repeat("5a", 16), Version: pidfile.Version}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal appends a matching checksum line to body, so that only what the
// body says is wrong.
func seal(body string) []byte {
	return fmt.Appendf(nil, "%scrc32c=%08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

// recordBody is a record's text without its checksum line.
func recordBody(r *pidfile.Record) string {
	b := string(r.Marshal())
	return b[:strings.LastIndex(b[:len(b)-1], "\n")+1]
}

// malformedPidfiles are the classes of malformed pidfile content.
func malformedPidfiles(e *Env) []struct {
	name    string
	content func(dir string) []byte
} {
	withPID := func(pid string) func(string) []byte {
		return func(dir string) []byte {
			_, rest, _ := strings.Cut(recordBody(foreignRecord(dir)), "\n")
			return seal(pid + "\n" + rest)
		}
	}
	return []struct {
		name    string
		content func(dir string) []byte
	}{
		{"empty", func(string) []byte { return []byte{} }},
		{"garbage text", func(string) []byte { return []byte("this is not a pidfile\nhello=world\n") }},
		{"binary", func(string) []byte {
			b := make([]byte, 512)
			for i := range b {
				b[i] = byte(e.Rand.Uint32())
			}
			return b
		}},
		{"oversized (1 MiB)", func(dir string) []byte {
			// One record, marshalled once: its time stamp, and so its
			// length, differ from call to call.
			b := foreignRecord(dir).Marshal()
			return bytes.Repeat(b, 1<<20/len(b)+1)[:1<<20]
		}},
		{"truncated mid-line", func(dir string) []byte {
			b := foreignRecord(dir).Marshal()
			cut := len(b) / 2
			for b[cut-1] == '\n' || b[cut] == '\n' {
				cut++
			}
			return b[:cut]
		}},
		{"negative PID", withPID("-4242")},
		{"zero PID", withPID("0")},
		{"huge PID", withPID("99999999999999999999")},
		{"PID above pid_max", withPID(strconv.Itoa(1<<22 + 1))},
		{"duplicate keys", func(dir string) []byte {
			return seal(strings.Replace(recordBody(foreignRecord(dir)), "status=ready\n", "status=ready\nstatus=stopped\n", 1))
		}},
		{"CRLF line endings", func(dir string) []byte {
			return []byte(strings.ReplaceAll(string(foreignRecord(dir).Marshal()), "\n", "\r\n"))
		}},
		{"CRLF, resealed", func(dir string) []byte {
			return seal(strings.ReplaceAll(recordBody(foreignRecord(dir)), "\n", "\r\n"))
		}},
		{"missing PID line", func(dir string) []byte {
			_, rest, _ := strings.Cut(recordBody(foreignRecord(dir)), "\n")
			return seal(rest)
		}},
		{"PostgreSQL postmaster.pid", func(dir string) []byte {
			return fmt.Appendf(nil, "4242\n%s\n1763790000\n5432\n/var/run/postgresql\nlocalhost\n  5432001     32768\nready   \n", dir)
		}},
	}
}

// badPidfiles: every class of malformed pidfile, planted before a start:
// a safe takeover that says the previous record was unreadable.
func badPidfiles(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want := 0
	classes := malformedPidfiles(e)
	for rep := range max(1, e.Scale.Iterations/10) {
		for _, c := range classes {
			dir := e.DataDir()
			what := fmt.Sprintf("%s (round %d)", c.name, rep)
			content := c.content(dir)
			path := pidfilePath(dir)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				r.fail("set-up: %v", err)
				continue
			}
			if _, err := pidfile.Parse(content); err == nil {
				r.fail("set-up: %s parses as a record", what)
			}
			r.Faults++
			r.Iterations++
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if code != 0 || panicked(out) {
				r.fail("%s: exit %d, want 0 (safe takeover): %s", what, code, out)
				continue
			}
			want++
			if !strings.Contains(out, "no readable record") {
				r.fail("%s: taken over without reporting the unreadable previous record: %s", what, out)
			}
			if rec, after, err := readPidfile(dir); err != nil || rec.Status != pidfile.Stopped || rec.PID == 4242 {
				r.fail("%s: after the takeover the pidfile is not the new holder's released record (%v): %.200q", what, err, after)
			}
			noSegmentsDir(&r, what, dir)
		}
	}
	notes := fmt.Sprintf("; %d classes, each taken over safely and reported", len(classes))
	return verify(w, r, want, notes)
}

// snapshot describes everything about path that a refused start must
// leave alone: inode, type, mode, owner, content (or link target, or
// directory entries).
func snapshot(path string) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "lstat: " + err.Error()
	}
	s := fmt.Sprintf("ino %d mode %07o uid %d gid %d", st.Ino, st.Mode, st.Uid, st.Gid)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(path)
		s += fmt.Sprintf(" size %d crc %08x %v", len(b), crc32.Checksum(b, castagnoli), err)
	case unix.S_IFLNK:
		t, err := os.Readlink(path)
		s += fmt.Sprintf(" -> %s %v", t, err)
	case unix.S_IFDIR:
		ents, err := os.ReadDir(path)
		for _, d := range ents {
			s += " " + d.Name()
		}
		s += fmt.Sprint(" ", err)
	}
	return s
}

// badObjects: the pidfile or the data directory is of the wrong type, owner
// or mode: refused with exit 78 naming the fix, and left alone.
func badObjects(e *Env) Result {
	var r Result
	w := e.NewWitness()
	var gaps []string
	record := func(dir, path string) error { return os.WriteFile(path, foreignRecord(dir).Marshal(), 0o600) }
	cases := []struct {
		name  string
		fix   string // what the message must say to do
		gap   bool   // a known gap: a missing fix goes to the notes, not the violations
		plant func(dir, pf string) ([]string, error)
	}{
		{"pidfile is a symlink", "remove the link", false, func(dir, pf string) ([]string, error) {
			target := dir + ".target"
			if err := record(dir, target); err != nil {
				return nil, err
			}
			return []string{pf, target}, os.Symlink(target, pf)
		}},
		{"pidfile is a FIFO", "remove it", false, func(dir, pf string) ([]string, error) {
			return []string{pf}, unix.Mkfifo(pf, 0o600)
		}},
		{"pidfile is a directory", "remove or rename it", false, func(dir, pf string) ([]string, error) {
			if err := os.Mkdir(pf, 0o700); err != nil {
				return nil, err
			}
			return []string{pf, pf + "/keep"}, os.WriteFile(pf+"/keep", []byte("keep me\n"), 0o600)
		}},
		{"pidfile is a character device", "remove it", false, func(dir, pf string) ([]string, error) {
			return []string{pf}, unix.Mknod(pf, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
		}},
		{"pidfile is a socket", "remove it", false, func(dir, pf string) ([]string, error) {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				return nil, err
			}
			defer unix.Close(fd)
			return []string{pf}, unix.Bind(fd, &unix.SockaddrUnix{Name: pf})
		}},
		{"pidfile owned by uid 65534", "run as its owner", false, func(dir, pf string) ([]string, error) {
			if err := record(dir, pf); err != nil {
				return nil, err
			}
			return []string{pf}, os.Lchown(pf, 65534, 65534)
		}},
		{"pidfile mode 0666", "chmod 0600", false, func(dir, pf string) ([]string, error) {
			if err := record(dir, pf); err != nil {
				return nil, err
			}
			return []string{pf}, os.Chmod(pf, 0o666)
		}},
		{"data dir mode 0770", "chmod go-w", false, func(dir, pf string) ([]string, error) {
			return []string{dir}, os.Chmod(dir, 0o770)
		}},
		{"data dir owned by uid 65534", "chown", false, func(dir, pf string) ([]string, error) {
			return []string{dir}, os.Lchown(dir, 65534, 65534)
		}},
	}
	for rep := range max(1, e.Scale.Iterations/10) {
		for _, c := range cases {
			dir := e.DataDir()
			pf := pidfilePath(dir)
			what := fmt.Sprintf("%s (round %d)", c.name, rep)
			paths, err := c.plant(dir, pf)
			if err != nil {
				r.fail("set-up: %s: %v", what, err)
				continue
			}
			var before []string
			for _, p := range paths {
				before = append(before, snapshot(p))
			}
			r.Faults++
			r.Iterations += 2
			code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
			if why := failedCleanly(code, out, c.fix); why != "" || code != 78 {
				if c.gap && code == 78 && failedCleanly(code, out) == "" {
					if rep == 0 {
						gaps = append(gaps, c.name)
					}
				} else {
					r.fail("%s: run: exit %d, want 78 saying %q (%s): %s", what, code, c.fix, why, out)
				}
			}
			if code, out := e.Dirlockd(nil, "check", "-D", dir); code != 3 || panicked(out) {
				r.fail("%s: check: exit %d, want 3: %s", what, code, out)
			}
			for i, p := range paths {
				if after := snapshot(p); after != before[i] {
					r.fail("%s: %s changed: %s (was %s)", what, p, after, before[i])
				}
			}
			noSegmentsDir(&r, what, dir)
		}
	}
	notes := fmt.Sprintf("; %d cases, each exit 78 with its fix, check exit 3, nothing touched", len(cases))
	if len(gaps) > 0 {
		notes += fmt.Sprintf(" (finding: %s: exit 78 but the message names no fix)", strings.Join(gaps, ", "))
	}
	return verify(w, r, 0, notes)
}

// plantedSeg is a foreign segment planted by the harness.
type plantedSeg struct {
	id, key int
	content []byte
}

// probeKeys are the keys dirlockd probes for a directory: ProbeLimit of them
// from its base key, wrapping around and skipping IPC_PRIVATE.
func probeKeys(id shm.Identity) []int {
	keys := make([]int, 0, shm.ProbeLimit)
	k := shm.BaseKey(id)
	for range shm.ProbeLimit {
		keys = append(keys, k)
		n := uint32(k) + 1
		if n == 0 {
			n = 1
		}
		k = int(int32(n))
	}
	return keys
}

// plantSegments creates a foreign segment at each key: random bytes, and every
// third one a dirlockd header naming another directory.
func plantSegments(e *Env, keys []int, id shm.Identity) ([]plantedSeg, error) {
	var segs []plantedSeg
	for i, key := range keys {
		sid, err := unix.SysvShmGet(key, shm.Size, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		if err != nil {
			return segs, fmt.Errorf("shmget(0x%08x): %w", uint32(key), err)
		}
		s := plantedSeg{id: sid, key: key, content: make([]byte, shm.Size)}
		segs = append(segs, s)
		for j := range s.content {
			s.content[j] = byte(e.Rand.Uint32())
		}
		if i%3 == 0 {
			le := binary.LittleEndian
			le.PutUint64(s.content[0:], shm.Magic)
			le.PutUint32(s.content[8:], shm.LayoutVersion)
			le.PutUint64(s.content[48:], id.Dev)
			le.PutUint64(s.content[56:], id.Ino+1+uint64(i))
		}
		mem, err := unix.SysvShmAttach(sid, 0, 0)
		if err != nil {
			return segs, fmt.Errorf("shmat(%d): %w", sid, err)
		}
		copy(mem, s.content)
		unix.SysvShmDetach(mem)
	}
	return segs, nil
}

// intact says what happened to a planted segment, or "".
func intact(s plantedSeg) string {
	d, err := shm.Stat(s.id)
	switch {
	case err != nil:
		return err.Error()
	case shm.MarkedForRemoval(d):
		return "marked for removal"
	case uint32(d.Perm.Key) != uint32(s.key):
		return fmt.Sprintf("key 0x%08x", uint32(d.Perm.Key))
	}
	mem, err := unix.SysvShmAttach(s.id, 0, unix.SHM_RDONLY)
	if err != nil {
		return err.Error()
	}
	defer unix.SysvShmDetach(mem)
	if !bytes.Equal(mem, s.content) {
		return "content changed"
	}
	return ""
}

// badForeignSegments: foreign segments at every key dirlockd may use, then
// at all but the last.
func badForeignSegments(e *Env) Result {
	var r Result
	w := e.NewWitness()
	want, codes := 0, map[int]int{}
	for rep := range max(1, e.Scale.Iterations/20) {
		for _, all := range []bool{true, false} {
			dir := e.DataDir()
			id, err := shm.DirIdentity(dir)
			if err != nil {
				r.fail("set-up: %v", err)
				continue
			}
			keys := probeKeys(id)
			what := fmt.Sprintf("round %d, %d foreign segments", rep, len(keys))
			if !all {
				keys = keys[:len(keys)-1]
				what = fmt.Sprintf("round %d, %d foreign segments, last key free", rep, len(keys))
			}
			func() {
				segs, err := plantSegments(e, keys, id)
				defer func() {
					for _, s := range segs {
						if _, err := unix.SysvShmCtl(s.id, unix.IPC_RMID, nil); err != nil {
							r.fail("%s: cannot remove planted segment %d: %v", what, s.id, err)
						}
					}
				}()
				if err != nil {
					r.fail("set-up: %v", err)
					return
				}
				r.Faults += len(segs)
				r.Iterations++
				code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, w)...)
				if all {
					codes[code]++
					if why := failedCleanly(code, out, "no free SysV key"); why != "" {
						r.fail("%s: %s: %s", what, why, out)
					}
					if b, err := os.ReadFile(pidfilePath(dir)); err == nil && len(b) > 0 {
						r.fail("%s: a failed start wrote a record: %q", what, b)
					}
				} else if code != 0 {
					r.fail("%s: exit %d, want 0 with the last key: %s", what, code, out)
				} else {
					want++
				}
				for _, s := range segs {
					if why := intact(s); why != "" {
						r.fail("%s: planted segment %d (key 0x%08x): %s", what, s.id, uint32(s.key), why)
					}
				}
				noSegments(&r, what, id)
				noHolders(&r, what, pidfilePath(dir))
			}()
		}
	}
	return verify(w, r, want, fmt.Sprintf("; all %d keys taken: exit %s \"no free SysV key\"; %d taken: the last used; every foreign segment intact",
		shm.ProbeLimit, codeCounts(codes), shm.ProbeLimit-1))
}

// badSegmentRemoved: ipcrm of a running holder's segment, as systemd-logind's
// RemoveIPC=yes does at logout. The lock is still the holder's, so the
// server must go on: at the next recheck the wrapper puts a new segment in
// place, records it, and says why; a second start is still refused, and a
// clean stop then removes the new segment.
func badSegmentRemoved(e *Env) Result {
	const recheck = 200 * time.Millisecond
	const bound = time.Second
	var r Result
	wit := e.NewWitness()
	want := 0
	var worst time.Duration
	for i := range max(2, e.Scale.Iterations/10) {
		dir := e.DataDir()
		what := fmt.Sprintf("round %d", i)
		argv := append([]string{e.Bin}, runArgs(dir, []string{"--recheck", recheck.String()}, e.WorkerArgs("sleep")...)...)
		ok := underHolder(e, &r, what, dir, argv, func(w *Proc, rep Report) (token string) {
			rec, _, err := readPidfile(dir)
			if err != nil || rep.ShmID == nil || rec.ShmID != *rep.ShmID {
				r.fail("%s: the holder's record (%v) and check disagree on the segment: %+v", what, err, rep)
				return
			}
			token = rec.Token
			start := time.Now()
			if out, err := exec.Command("ipcrm", "-m", strconv.Itoa(rec.ShmID)).CombinedOutput(); err != nil {
				r.fail("set-up: ipcrm -m %d: %v: %s", rec.ShmID, err, out)
				return
			}
			r.Faults++
			r.Iterations++
			var renewed *pidfile.Record
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && w.alive(); time.Sleep(5 * time.Millisecond) {
				if now, _, err := readPidfile(dir); err == nil && now.Token == rec.Token && now.ShmID != rec.ShmID {
					renewed = now
					break
				}
			}
			took := time.Since(start)
			worst = max(worst, took)
			switch {
			case !w.alive():
				r.fail("%s: the wrapper stopped after ipcrm, want it to go on: %s", what, w.output())
				return
			case renewed == nil:
				r.fail("%s: no new segment recorded 10s after ipcrm: %s", what, w.output())
				return
			case took > bound:
				r.fail("%s: the new segment took %v to be recorded, want within %v (recheck %v)", what, took, bound, recheck)
			}
			if d, err := shm.Stat(renewed.ShmID); err != nil || shm.MarkedForRemoval(d) {
				r.fail("%s: the recorded new segment %d: %v", what, renewed.ShmID, err)
			}
			if !w.waitOutput("RemoveIPC", 5*time.Second) {
				r.fail("%s: no warning naming RemoveIPC: %s", what, w.output())
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, wit)...); code != 75 {
				r.fail("%s: a second start while the holder runs exited %d, want 75: %s", what, code, out)
			}
			w.cmd.Process.Signal(syscall.SIGTERM)
			if code, exited := w.wait(10 * time.Second); !exited || code != 128+int(syscall.SIGTERM) {
				r.fail("%s: after SIGTERM the wrapper exited %d (in time: %v), want 143: %s", what, code, exited, w.output())
				return
			}
			if _, err := shm.Stat(renewed.ShmID); err == nil {
				r.fail("%s: the new segment %d still exists after the wrapper exited", what, renewed.ShmID)
			}
			noSegmentsDir(&r, what, dir)
			if n := reap(token); n > 0 {
				r.fail("%s: %d process(es) of the holder left behind (killed)", what, n)
			}
			token = ""
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, wit)...); code != 0 {
				r.fail("%s: the next run exited %d, want 0: %s", what, code, out)
			} else {
				want++
			}
			return
		})
		if !ok {
			break
		}
	}
	return verify(wit, r, want, fmt.Sprintf("; recheck %v: new segment recorded within %v at worst, server kept running; next run OK", recheck, worst.Round(time.Millisecond)))
}

// rmidForced reads shm_rmid_forced of our IPC namespace.
func rmidForced() string {
	b, _ := os.ReadFile("/proc/sys/kernel/shm_rmid_forced")
	return strings.TrimSpace(string(b))
}

// badRmidForced: a holder in an IPC namespace whose shm_rmid_forced is 1
// (segments destroyed once nobody is attached) keeps its segment while it
// holds, and its namespace goes with it.
func badRmidForced(e *Env) Result {
	const recheck = 200 * time.Millisecond
	var r Result
	wit := e.NewWitness()
	want := 0
	host := rmidForced()
	defer func() {
		if now := rmidForced(); now != host {
			r.fail("the host's shm_rmid_forced changed from %s to %s (restored)", host, now)
			os.WriteFile("/proc/sys/kernel/shm_rmid_forced", []byte(host), 0o644)
		}
	}()
	ownNS, _ := os.Readlink("/proc/self/ns/ipc")
	for i := range max(2, e.Scale.Iterations/20) {
		dir := e.DataDir()
		what := fmt.Sprintf("round %d", i)
		argv := append([]string{"unshare", "--ipc", "sh", "-c", `echo 1 > /proc/sys/kernel/shm_rmid_forced && exec "$@"`, "sh",
			e.Bin, "run", "-D", dir, "--recheck", recheck.String(), "--"}, e.WorkerArgs("sleep")...)
		ok := underHolder(e, &r, what, dir, argv, func(w *Proc, rep Report) (token string) {
			rec, _, err := readPidfile(dir)
			if err != nil {
				r.fail("%s: the holder's record: %v", what, err)
				return
			}
			token = rec.Token
			pid := w.pid()
			exe, err1 := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
			bin, err2 := os.Stat(e.Bin)
			ns, err3 := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", pid))
			if err := errors.Join(err1, err2, err3); err != nil || !os.SameFile(exe, bin) || ns == ownNS || rec.PID != pid {
				r.fail("set-up: PID %d is not dirlockd in its own IPC namespace (%v, ns %s, record PID %d)", pid, err, ns, rec.PID)
				return
			}
			inside := func(args ...string) string {
				out, _ := exec.Command("nsenter", append([]string{"--ipc=/proc/" + strconv.Itoa(pid) + "/ns/ipc"}, args...)...).Output()
				return string(out)
			}
			if v := strings.TrimSpace(inside("cat", "/proc/sys/kernel/shm_rmid_forced")); v != "1" {
				r.fail("set-up: shm_rmid_forced in the namespace is %q, want 1", v)
				return
			}
			r.Faults++
			// Several rechecks must pass: each writes a heartbeat only
			// when the segment is still there, unmarked.
			beats := map[string]bool{}
			deadline := time.Now().Add(10 * recheck)
			for len(beats) < 4 && time.Now().Before(deadline) && w.alive() {
				if rec, _, err := readPidfile(dir); err == nil && rec.Extra["heartbeat"] != "" {
					beats[rec.Extra["heartbeat"]] = true
				}
				time.Sleep(recheck / 4)
			}
			r.Iterations++
			if len(beats) < 4 || !w.alive() {
				r.fail("%s: %d rechecks passed in %v (wrapper alive: %v), want 4: %s", what, len(beats), 10*recheck, w.alive(), w.output())
				return
			}
			seg := false
			for line := range strings.SplitSeq(inside("cat", "/proc/sysvipc/shm"), "\n") {
				f := strings.Fields(line)
				if len(f) > 6 && f[1] == strconv.Itoa(rec.ShmID) && f[6] != "0" {
					seg = true
				}
			}
			if !seg {
				r.fail("%s: the holder's segment %d is not in its namespace, attached", what, rec.ShmID)
			}
			r.Iterations++
			if code, out := e.Dirlockd(nil, "run", "-D", dir, "--", "true"); code != 75 {
				r.fail("%s: host contender: exit %d, want 75: %s", what, code, out)
			}
			syscall.Kill(pid, syscall.SIGTERM)
			code, exited := w.wait(10 * time.Second)
			if !exited {
				r.fail("%s: still running 10s after SIGTERM: %s", what, w.output())
				return
			}
			if out := w.output(); code != 128+int(syscall.SIGTERM) || !strings.Contains(out, "released the data directory") || panicked(out) {
				r.fail("%s: exit %d after SIGTERM, want 143 and a release: %s", what, code, out)
			}
			if !WaitDead(rep.ChildPID, 2*time.Second) {
				r.fail("%s: the server (PID %d) still runs", what, rep.ChildPID)
			}
			if n := reap(token); n > 0 {
				r.fail("%s: %d process(es) of the holder left behind (killed)", what, n)
			}
			token = ""
			links, _ := filepath.Glob("/proc/[0-9]*/ns/ipc")
			for _, l := range links {
				if t, _ := os.Readlink(l); t == ns {
					r.fail("%s: %s is still in the holder's IPC namespace %s", what, l, ns)
				}
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, wit)...); code != 0 {
				r.fail("%s: the next run on the host exited %d: %s", what, code, out)
			} else {
				want++
			}
			return
		})
		if !ok {
			break
		}
	}
	return verify(wit, r, want, "; holder kept its segment over 4+ rechecks, host contender 75, SIGTERM 143, namespace gone")
}

// badCommandLines: usage errors exit 64 (status: 4, its LSB "unknown"),
// never panic, and touch nothing.
func badCommandLines(e *Env) Result {
	var r Result
	dir := e.DataDir()
	cases := []struct {
		want int
		args []string
	}{
		{64, nil},
		{64, []string{"frobnicate"}},
		{64, []string{"run", "-D", dir, "--bogus", "--", "true"}},
		{64, []string{"run", "-D", dir, "-x", "--", "true"}},
		{64, []string{"run", "-D", dir, "--wait", "soon", "--", "true"}},
		{64, []string{"run", "-D", dir, "--wait=", "--", "true"}},
		{64, []string{"run", "-D", dir, "--recheck", "-1s", "--", "true"}},
		{64, []string{"run", "-D", dir, "--stop-timeout", "-5s", "--", "true"}},
		{64, []string{"run", "-D", dir, "--lock-method", "carrier-pigeon", "--", "true"}},
		{64, []string{"run", "-D", dir, "--conflict-exit-code", "0", "--", "true"}},
		{64, []string{"run", "-D", dir, "--conflict-exit-code", "300", "--", "true"}},
		{64, []string{"run", "-D", dir, "--conflict-exit-code", "many", "--", "true"}},
		{64, []string{"run", "-D", dir, "--on-lost", "maybe", "--", "true"}},
		{64, []string{"run", "-D", dir, "--ready-tcp", "nonsense", "--", "true"}},
		{64, []string{"run", "-D", dir, "--log-level", "loud", "--", "true"}},
		{64, []string{"run", "-D", dir, "--log-format", "yaml", "--", "true"}},
		{64, []string{"run", "-D", dir}},
		{64, []string{"run", "-D", dir, "--"}},
		{64, []string{"run", "-D", dir, "stray", "--", "true"}},
		{64, []string{"run", "-D", dir, "--pidfile", "a/b", "--", "true"}},
		{64, []string{"run", "-D", dir, "--pidfile", "", "--", "true"}},
		{64, []string{"run", "--", "true"}},
		{64, []string{"run", "-D"}},
		{64, []string{"check", "-D", dir, "--bogus"}},
		{64, []string{"check", "-D", dir, "--json=maybe"}},
		{64, []string{"check", "-D", dir, "stray"}},
		{64, []string{"check", "-D", dir, "--lock-method", "carrier-pigeon"}},
		{64, []string{"stop", "-D", dir, "--timeout", "soon"}},
		{64, []string{"stop", "-D", dir, "--timeout", "0"}},
		{64, []string{"stop", "-D", dir, "--timeout", "-1s"}},
		{64, []string{"stop", "-D", dir, "--signal", "BOGUS"}},
		{64, []string{"stop", "-D", dir, "--signal", "0"}},
		{64, []string{"stop", "-D", dir, "--kill-after", "2s", "--timeout", "1s"}},
		{64, []string{"wait", "-D", dir, "--for", "nothing"}},
		{64, []string{"wait", "-D", dir, "--timeout", "-1s"}},
		{64, []string{"wait", "-D", dir, "--timeout", "soon"}},
		{64, []string{"wait", "-D", dir, "stray"}},
		{4, []string{"status", "-D", dir, "--bogus"}},
		{4, []string{"status", "--pidfile", "a/b", "-D", dir}},
	}
	for _, c := range cases {
		r.Faults++
		r.Iterations++
		code, out := e.Dirlockd([]string{"DIRLOCKD_DATADIR="}, c.args...)
		if code != c.want || panicked(out) || strings.TrimSpace(out) == "" {
			r.fail("dirlockd %q: exit %d, want %d with a message: %s", c.args, code, c.want, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		r.fail("a refused command line created %s/%s", dir, ents[0].Name())
	}
	noSegmentsDir(&r, "bad command lines", dir)
	r.Notes = fmt.Sprintf("%d command lines: exit 64 (status: 4), a message, no panic, nothing created", len(cases))
	return r
}
