package torture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/exitcode"
	"github.com/dirlockd/dirlockd/internal/testutil"
	"github.com/dirlockd/dirlockd/pidfile"
	"github.com/dirlockd/dirlockd/shm"
)

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
			return segs, fmt.Errorf("shmget(%s): %w", pidfile.FormatKey(key), err)
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
	case d.Removed:
		return "marked for removal"
	case uint32(d.Key) != uint32(s.key):
		return "key " + pidfile.FormatKey(d.Key)
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

// badForeignSegments: foreign segments at every key dirlockd may use (it
// falls back to an IPC_PRIVATE segment), then at all but the last.
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
				}
				// With every key taken the segment is made with
				// IPC_PRIVATE: anybody can fill the window (issue 17).
				if code != 0 {
					r.fail("%s: exit %d, want 0: %s", what, code, out)
				} else {
					want++
				}
				for _, s := range segs {
					if why := intact(s); why != "" {
						r.fail("%s: planted segment %d (key %s): %s", what, s.id, pidfile.FormatKey(s.key), why)
					}
				}
				noSegments(&r, what, id)
				noHolders(&r, what, pidfilePath(dir))
			}()
		}
	}
	return verify(w, r, want, fmt.Sprintf("; all %d keys taken: exit %s, a private segment used; %d taken: the last used; every foreign segment intact",
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
		ok := underHolder(e, &r, what, dir, argv, func(w *testutil.Proc, rep testutil.Report) (token string) {
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
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && w.Alive(); time.Sleep(5 * time.Millisecond) {
				if now, _, err := readPidfile(dir); err == nil && now.Token == rec.Token && now.ShmID != rec.ShmID {
					renewed = now
					break
				}
			}
			took := time.Since(start)
			worst = max(worst, took)
			switch {
			case !w.Alive():
				r.fail("%s: the wrapper stopped after ipcrm, want it to go on: %s", what, w.Output())
				return
			case renewed == nil:
				r.fail("%s: no new segment recorded 10s after ipcrm: %s", what, w.Output())
				return
			case took > bound:
				r.fail("%s: the new segment took %v to be recorded, want within %v (recheck %v)", what, took, bound, recheck)
			}
			if d, err := shm.Stat(renewed.ShmID); err != nil || d.Removed {
				r.fail("%s: the recorded new segment %d: %v", what, renewed.ShmID, err)
			}
			if !w.WaitOutput("RemoveIPC", 5*time.Second) {
				r.fail("%s: no warning naming RemoveIPC: %s", what, w.Output())
			}
			r.Iterations++
			if code, out := e.Dirlockd([]string{e.WorkerEnv()}, workArgs(e, dir, wit)...); code != exitcode.Held {
				r.fail("%s: a second start while the holder runs exited %d, want 75: %s", what, code, out)
			}
			w.Cmd.Process.Signal(syscall.SIGTERM)
			if code, exited := w.Exited(10 * time.Second); !exited || code != exitcode.SignalBase+int(syscall.SIGTERM) {
				r.fail("%s: after SIGTERM the wrapper exited %d (in time: %v), want 143: %s", what, code, exited, w.Output())
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
		ok := underHolder(e, &r, what, dir, argv, func(w *testutil.Proc, rep testutil.Report) (token string) {
			rec, _, err := readPidfile(dir)
			if err != nil {
				r.fail("%s: the holder's record: %v", what, err)
				return
			}
			token = rec.Token
			pid := w.PID()
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
			for len(beats) < 4 && time.Now().Before(deadline) && w.Alive() {
				if rec, _, err := readPidfile(dir); err == nil && rec.Extra[testutil.RecordHeartbeat] != "" {
					beats[rec.Extra[testutil.RecordHeartbeat]] = true
				}
				time.Sleep(recheck / 4)
			}
			r.Iterations++
			if len(beats) < 4 || !w.Alive() {
				r.fail("%s: %d rechecks passed in %v (wrapper alive: %v), want 4: %s", what, len(beats), 10*recheck, w.Alive(), w.Output())
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
			if code, out := e.Dirlockd(nil, "run", "-D", dir, "--", "true"); code != exitcode.Held {
				r.fail("%s: host contender: exit %d, want 75: %s", what, code, out)
			}
			syscall.Kill(pid, syscall.SIGTERM)
			code, exited := w.Exited(10 * time.Second)
			if !exited {
				r.fail("%s: still running 10s after SIGTERM: %s", what, w.Output())
				return
			}
			if out := w.Output(); code != exitcode.SignalBase+int(syscall.SIGTERM) || !strings.Contains(out, "released the data directory") || panicked(out) {
				r.fail("%s: exit %d after SIGTERM, want 143 and a release: %s", what, code, out)
			}
			if !testutil.WaitDead(rep.ChildPID, 2*time.Second) {
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
