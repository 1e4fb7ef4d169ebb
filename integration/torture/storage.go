package torture

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/fault"
	"github.com/dirlockd/dirlockd/internal/testutil"
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
				code, out := e.Dirlockd([]string{fault.Env + "=" + strconv.Itoa(int(fault.RecordWritten))}, "run", "-D", dir, "--", "true")
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
			if why := failedCleanly(code, out, "cannot open pidfile", "no space"); why != "" || code != exitcode.Invalid {
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
				if why := failedCleanly(code, out, "read-only"); why != "" || code != exitcode.Invalid {
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
		ok := underHolder(e, &r, what, dir, argv, func(w *testutil.Proc, rep testutil.Report) (token string) {
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
			if !testutil.WaitDead(rep.ChildPID, 2*time.Second) {
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
func stopsAfterLoss(r *Result, w *testutil.Proc, what, cause string, start time.Time, bound, recheck time.Duration, worst *time.Duration) bool {
	code, exited := w.Exited(10 * time.Second)
	took := time.Since(start)
	*worst = max(*worst, took)
	if !exited {
		r.fail("%s: the wrapper still runs 10s after %s: %s", what, cause, w.Output())
		return false
	}
	if took > bound {
		r.fail("%s: the wrapper took %v to stop, want within %v (recheck %v)", what, took, bound, recheck)
	}
	if out := w.Output(); code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(out, "interlock is lost") || panicked(out) {
		r.fail("%s: exit %d, want 143 (server stopped) after \"interlock is lost\": %s", what, code, out)
	}
	return true
}
