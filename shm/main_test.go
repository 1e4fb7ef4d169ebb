package shm

import (
	"fmt"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.Helper{
		"attach": helperAttach,
	})
}

// helperAttach attaches SysV segment args[0] by id, read-write (read-only
// with a second argument "ro", as analyzers do), prints "attached", and
// stays attached until its stdin is closed (or it is killed). A "detach"
// line makes it detach and print "detached".
func helperAttach(args []string) int {
	id, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	flag := 0
	if len(args) > 1 && args[1] == "ro" {
		flag = unix.SHM_RDONLY
	}
	mem, err := unix.SysvShmAttach(id, 0, flag)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("attached")
	in := testutil.Lines()
	for in.Scan() {
		switch in.Text() {
		case "detach":
			if err := unix.SysvShmDetach(mem); err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println("detached")
		default:
			fmt.Println("error unknown command", in.Text())
			return 2
		}
	}
	return 0
}
