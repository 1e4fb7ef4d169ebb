package proc

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/eintr"
)

// A pass over /proc costs one directory listing and, per process, only the
// files some witness needs, read with raw syscalls into one reused buffer:
// openat relative to /proc, one read (the kernel fills the buffer from the
// process's memory in one call), close. A host with thousands of processes
// (a Kubernetes node, a database with a thousand connections) then costs a
// few microseconds a process, paid once however many data directories and
// witnesses the pass serves.

// FileID names a file by device and inode.
type FileID struct{ Dev, Ino uint64 }

// Query is what one pass over /proc looks for.
type Query struct {
	// Env are "KEY=VALUE" entries to find in processes' initial
	// environments.
	Env []string
	// Locked are files whose lock holders to find: processes with a
	// descriptor on the file whose fdinfo shows a "lock:" line.
	Locked []FileID
	// Segments are SysV shmids whose attached processes to find (in
	// /proc/PID/maps; the caller filters by IPC namespace).
	Segments []int
}

func (q Query) empty() bool { return len(q.Env) == 0 && len(q.Locked) == 0 && len(q.Segments) == 0 }

// Found is what a pass found, each list in ascending PID order.
type Found struct {
	Env      map[string][]int // entry → processes carrying it
	Holders  map[FileID][]int // file → processes holding a lock on it
	Attached map[int][]Attachment
	// Creds are the real and effective uids of the processes in Env, read
	// in the same pass: who made a process decides whether its
	// environment is evidence (anybody can put anything in an
	// environment).
	Creds map[int]Creds
}

// Creds are the uids of a process, from the Uid line of /proc/PID/status.
type Creds struct{ Real, Effective uint32 }

// Search makes one pass over the processes visible in our PID namespace
// and answers every part of q. A process that exits or hides its entries
// while it is read is skipped; failing to list /proc is an error.
func Search(q Query) (*Found, error) {
	f := newFound()
	if q.empty() {
		return f, nil
	}
	s, err := newScanner()
	if err != nil {
		return nil, err
	}
	defer s.close()
	env := newEnvMatcher(q.Env)
	locked := map[FileID]bool{}
	for _, id := range q.Locked {
		locked[id] = true
	}
	pids, err := s.pids()
	if err != nil {
		return nil, err
	}
	// The reads of different processes are independent, and on a host
	// with thousands of processes the pass is the whole cost of a check:
	// split it over the CPUs, each part with a buffer of its own, and join
	// the parts in PID order.
	parts := 1
	if len(pids) >= parallelFrom {
		parts = min(runtime.GOMAXPROCS(0), maxParts)
	}
	found := make([]*Found, parts)
	var wg sync.WaitGroup
	for i := range parts {
		chunk := pids[i*len(pids)/parts : (i+1)*len(pids)/parts]
		ps := s
		if i > 0 {
			ps = &scanner{root: s.root, buf: make([]byte, len(s.buf))}
		}
		wg.Go(func() { found[i] = ps.search(chunk, env, locked, q.Segments) })
	}
	wg.Wait()
	for _, part := range found {
		for k, v := range part.Env {
			f.Env[k] = append(f.Env[k], v...)
		}
		for k, v := range part.Holders {
			f.Holders[k] = append(f.Holders[k], v...)
		}
		for k, v := range part.Attached {
			f.Attached[k] = append(f.Attached[k], v...)
		}
		maps.Copy(f.Creds, part.Creds)
	}
	return f, nil
}

func newFound() *Found {
	return &Found{Env: map[string][]int{}, Holders: map[FileID][]int{}, Attached: map[int][]Attachment{}, Creds: map[int]Creds{}}
}

// parseCreds reads the real and effective uids from the Uid line of
// /proc/PID/status ("Uid:\t1000\t1000\t1000\t1000").
func parseCreds(status []byte) (Creds, bool) {
	i := bytes.Index(status, []byte("\nUid:"))
	if i < 0 {
		return Creds{}, false
	}
	line := status[i+len("\nUid:"):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return Creds{}, false
	}
	r, err1 := strconv.ParseUint(f[0], 10, 32)
	e, err2 := strconv.ParseUint(f[1], 10, 32)
	return Creds{Real: uint32(r), Effective: uint32(e)}, err1 == nil && err2 == nil
}

// A pass over at least parallelFrom processes is split into up to maxParts
// parts read side by side: below that, starting the threads costs more than
// it saves.
const (
	parallelFrom = 512
	maxParts     = 4
)

// search answers a Query's witnesses for pids, in order.
func (s *scanner) search(pids []int, env *envMatcher, locked map[FileID]bool, segments []int) *Found {
	f := newFound()
	for _, pid := range pids {
		if env != nil {
			matched := false
			if b, ok := s.read(pid, "environ"); ok {
				env.match(b, func(e string) { f.Env[e], matched = append(f.Env[e], pid), true })
			}
			if matched {
				if b, ok := s.read(pid, "status"); ok {
					if c, ok := parseCreds(b); ok {
						f.Creds[pid] = c
					}
				}
			}
		}
		if len(locked) > 0 {
			for _, id := range s.lockedFiles(pid, locked) {
				f.Holders[id] = append(f.Holders[id], pid)
			}
		}
		if len(segments) > 0 {
			if b, ok := s.read(pid, "maps"); ok {
				for _, id := range segments {
					if w, ro := mapsSysV(b, uint64(id)); w || ro > 0 {
						f.Attached[id] = append(f.Attached[id], Attachment{PID: pid, Writable: w, ReadOnly: ro})
					}
				}
			}
		}
	}
	return f
}

// scanner reads /proc through one directory descriptor and one buffer.
type scanner struct {
	root int
	buf  []byte
	path []byte
}

func newScanner() (*scanner, error) {
	fd, err := eintr.Openat(unix.AT_FDCWD, Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", &os.PathError{Op: "open", Path: Root, Err: err})
	}
	return &scanner{root: fd, buf: make([]byte, 64<<10)}, nil
}

func (s *scanner) close() { unix.Close(s.root) }

// pids lists the processes in ascending order, from the directory entries
// of /proc whose names are numbers.
func (s *scanner) pids() ([]int, error) {
	return listNumeric(s.root, s.buf, Root, 1)
}

// listNumeric lists the entries of directory fd whose names are decimal
// numbers of at least lowest, in ascending order.
func listNumeric(fd int, buf []byte, name string, lowest int) ([]int, error) {
	var out []int
	for {
		n, err := eintr.Result(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", name, err)
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) >= 19; {
			// struct linux_dirent64: ino u64, off s64, reclen u16,
			// type u8, name NUL-terminated.
			reclen := int(b[16]) | int(b[17])<<8
			if reclen < 19 || reclen > len(b) {
				break
			}
			if v, ok := atoi(b[19:reclen]); ok && v >= lowest {
				out = append(out, v)
			}
			b = b[reclen:]
		}
	}
	slices.Sort(out)
	return out, nil
}

// atoi parses a NUL-terminated decimal number.
func atoi(name []byte) (int, bool) {
	v := 0
	for i, c := range name {
		if c == 0 {
			return v, i > 0
		}
		if c < '0' || c > '9' || i > 9 {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, len(name) > 0
}

// rel returns "PID/name" (and "PID/name/fd" when fd >= 0) as a path
// relative to /proc.
func (s *scanner) rel(pid int, name string, fd int) string {
	p := strconv.AppendInt(s.path[:0], int64(pid), 10)
	p = append(p, '/')
	p = append(p, name...)
	if fd >= 0 {
		p = append(p, '/')
		p = strconv.AppendInt(p, int64(fd), 10)
	}
	s.path = p
	return string(p)
}

// read returns the whole content of /proc/PID/name in s's buffer (valid
// until the next read), or false when the process is gone or hides it.
func (s *scanner) read(pid int, name string) ([]byte, bool) {
	return s.readPath(s.rel(pid, name, -1))
}

// readPath reads a file of /proc until end of file. Most of them are
// seq_files (maps, fdinfo), which hand out about a page per read whatever
// the buffer's size: a short read is not the end. environ is no seq_file
// and fills the buffer in one read, so a read that leaves room is its end,
// which saves the read that would return 0 on the pass's commonest file.
func (s *scanner) readPath(rel string) ([]byte, bool) {
	fd, err := eintr.Openat(s.root, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	oneRead := strings.HasSuffix(rel, "/environ")
	n := 0
	for {
		if n == len(s.buf) {
			s.buf = slices.Grow(s.buf, len(s.buf))[:2*len(s.buf)]
		}
		m, err := eintr.Result(func() (int, error) { return unix.Pread(fd, s.buf[n:], int64(n)) })
		if err != nil {
			return nil, false
		}
		n += m
		if m == 0 || oneRead && n < len(s.buf) {
			return s.buf[:n], true
		}
	}
}

// lockedFiles returns the files of want on which process pid holds a lock
// through one of its descriptors.
func (s *scanner) lockedFiles(pid int, want map[FileID]bool) []FileID {
	dir, err := eintr.Openat(s.root, s.rel(pid, "fd", -1), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	fds, err := listNumeric(dir, s.buf, "fd", 0)
	unix.Close(dir)
	if err != nil {
		return nil
	}
	var out []FileID
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Fstatat(s.root, s.rel(pid, "fd", fd), &st, 0) != nil {
			continue
		}
		id := FileID{st.Dev, st.Ino}
		if !want[id] || slices.Contains(out, id) {
			continue
		}
		if b, ok := s.readPath(s.rel(pid, "fdinfo", fd)); ok && hasLockLine(b) {
			out = append(out, id)
		}
	}
	return out
}

// envMatcher finds "KEY=VALUE" entries in an environment block (entries
// separated by NUL) with one substring search per distinct key, not one
// comparison per entry and wanted value.
type envMatcher struct {
	keys [][]byte            // distinct "KEY=" prefixes
	want map[string]struct{} // the entries
}

func newEnvMatcher(entries []string) *envMatcher {
	if len(entries) == 0 {
		return nil
	}
	m := &envMatcher{want: map[string]struct{}{}}
	for _, e := range entries {
		m.want[e] = struct{}{}
		if i := bytes.IndexByte([]byte(e), '='); i >= 0 {
			k := []byte(e[:i+1])
			if !slices.ContainsFunc(m.keys, func(x []byte) bool { return bytes.Equal(x, k) }) {
				m.keys = append(m.keys, k)
			}
		}
	}
	return m
}

// match calls fn with every wanted entry that env holds, once each.
func (m *envMatcher) match(env []byte, fn func(entry string)) {
	var seen []string
	for _, k := range m.keys {
		for off := 0; off < len(env); {
			i := bytes.Index(env[off:], k)
			if i < 0 {
				break
			}
			i += off
			off = i + 1
			if i > 0 && env[i-1] != 0 {
				continue // the key is the tail of another entry's text
			}
			end := bytes.IndexByte(env[i:], 0)
			if end < 0 {
				end = len(env) - i
			}
			e := env[i : i+end]
			if _, ok := m.want[string(e)]; ok && !slices.Contains(seen, string(e)) {
				seen = append(seen, string(e))
				fn(string(e))
			}
			off = i + end
		}
	}
}
