package shm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/dirlockd/dirlockd/internal/users"
)

// Owners are the uids whose segments may witness a data directory: root, the
// directory's owner, and the uid its holder runs as. A segment counts only
// when the kernel says one of them made it and owns it: its creator uid
// (cuid, which nobody can change) and its owner uid (which its creator may
// give away with IPC_SET) are both among them. Anybody else can create a
// segment at any key and copy a header into it; such a segment is never
// counted, never removed, and never makes a start fail.
type Owners []uint32

// Trusts reports whether a segment created by cuid and owned by uid may be
// a witness.
func (o Owners) Trusts(uid, cuid uint32) bool {
	return slices.Contains(o, uid) && slices.Contains(o, cuid)
}

// foreignOwner says why a segment created by cuid and owned by uid is not
// trusted, naming the user, or "" when it is.
func (o Owners) foreignOwner(uid, cuid uint32) string {
	switch {
	case !slices.Contains(o, cuid):
		return "created by " + users.Name(cuid)
	case !slices.Contains(o, uid):
		return "owned by " + users.Name(uid)
	}
	return ""
}

// listPath is the kernel's list of the SysV segments of the caller's IPC
// namespace.
const listPath = "/proc/sysvipc/shm"

// listed is one segment of listPath.
type listed struct {
	id, key    int
	size       uint64
	uid, cuid  uint32
	nattch     int
	creatorPID int
}

// list reads the segments of our IPC namespace from /proc/sysvipc/shm: one
// read of a file the kernel writes, instead of a shmget for every key a
// segment of ours could have, and it finds segments at any key, IPC_PRIVATE
// among them.
func list() ([]listed, error) {
	b, err := os.ReadFile(listPath)
	if err != nil {
		return nil, fmt.Errorf("list SysV segments: %w", err)
	}
	return parseList(b)
}

// parseList parses the content of /proc/sysvipc/shm: a header line naming
// the columns, then one line per segment.
func parseList(b []byte) ([]listed, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		return nil, nil
	}
	col := map[string]int{}
	for i, name := range strings.Fields(sc.Text()) {
		col[name] = i
	}
	need := []string{"key", "shmid", "size", "cpid", "nattch", "uid", "cuid"}
	for _, name := range need {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("%s: no column %q in %q", listPath, name, sc.Text())
		}
	}
	var out []listed
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < len(col) {
			continue
		}
		num := func(name string) (uint64, error) { return strconv.ParseUint(f[col[name]], 10, 64) }
		var v [7]uint64
		var errs []error
		for i, name := range need {
			var err error
			if name == "key" { // signed: IPC_PRIVATE is 0, others may print negative
				var k int64
				k, err = strconv.ParseInt(f[col[name]], 10, 64)
				v[i] = uint64(uint32(int32(k)))
			} else {
				v[i], err = num(name)
			}
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", listPath, sc.Text(), err)
		}
		out = append(out, listed{key: int(int32(uint32(v[0]))), id: int(v[1]), size: v[2], creatorPID: int(v[3]),
			nattch: int(v[4]), uid: uint32(v[5]), cuid: uint32(v[6])})
	}
	return out, sc.Err()
}
