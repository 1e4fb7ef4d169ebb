package shm

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseList(t *testing.T) {
	const in = `       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
 -756664305          6   600                  4096  1234  1234      1     0     0     0     0 1733500000 1733500000 1733500000                  4096                     0
          0         32   644                  4096   999     0      0  1001  1001  1001  1001          0          0 1733500000                     0                     0
`
	got, err := parseList([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []listed{
		{id: 6, key: -756664305, size: 4096, uid: 0, cuid: 0, nattch: 1, creatorPID: 1234},
		{id: 32, key: 0, size: 4096, uid: 1001, cuid: 1001, nattch: 0, creatorPID: 999},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseList = %+v, want %+v", got, want)
	}
	if _, err := parseList([]byte("key shmid\n1 2\n")); err == nil || !strings.Contains(err.Error(), "no column") {
		t.Errorf("parseList of a header without uid: %v; want an error", err)
	}
	if got, err := parseList(nil); err != nil || got != nil {
		t.Errorf("parseList(empty) = %v, %v", got, err)
	}
}

// TestListSeesOwnSegment: the kernel's list shows a segment we make, with
// our uid as owner and creator, also one made with IPC_PRIVATE.
func TestListSeesOwnSegment(t *testing.T) {
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, Size, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	segs, err := list()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(segs, func(l listed) bool { return l.id == id })
	if i < 0 {
		t.Fatalf("list does not show segment %d: %+v", id, segs)
	}
	euid := uint32(os.Geteuid())
	if l := segs[i]; l.key != 0 || l.size != Size || l.uid != euid || l.cuid != euid || l.creatorPID != os.Getpid() {
		t.Errorf("listed %+v; want key 0, size %d, uid and cuid %d, creator %d", l, Size, euid, os.Getpid())
	}
}

func TestOwnersTrust(t *testing.T) {
	o := Owners{0, 101, 1000}
	for _, c := range []struct {
		uid, cuid uint32
		want      bool
	}{{0, 0, true}, {101, 0, true}, {1000, 101, true}, {0, 1001, false}, {1001, 0, false}, {1001, 1001, false}} {
		if got := o.Trusts(c.uid, c.cuid); got != c.want {
			t.Errorf("Trusts(uid %d, cuid %d) = %v, want %v", c.uid, c.cuid, got, c.want)
		}
	}
	if why := o.foreignOwner(0, 65534); !strings.Contains(why, "created by") || !strings.Contains(why, "uid 65534") {
		t.Errorf("foreignOwner(0, 65534) = %q; want the creator named", why)
	}
}

func TestLimitErrorNamesOwners(t *testing.T) {
	e := &LimitError{Segments: 7, Shmmni: 7, Owners: map[uint32]int{0: 1, 65534: 6}}
	msg := e.Error()
	for _, want := range []string{"kernel.shmmni is 7", "7 segments exist (6 of ", "uid 65534), 1 of ", "ipcrm"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "no space left") {
		t.Errorf("%q speaks of a filesystem", msg)
	}
}
