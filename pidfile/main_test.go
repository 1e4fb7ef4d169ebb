package pidfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, map[string]testutil.Helper{
		"hold":    helperHold,
		"inherit": helperInherit,
		"open-as": helperOpenAs,
	})
}

// helperHold claims the data directory args[0] with method args[1], prints
// "locked METHOD", and holds it until its stdin closes or it is killed.
func helperHold(args []string) int {
	m, err := ParseMethod(args[1])
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	f, err := Claim(args[0], Options{Method: m})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("locked", f.Method())
	in := testutil.Lines()
	for in.Scan() {
	}
	f.Close()
	return 0
}

// helperInherit claims the data directory args[0] with flock, writes a
// record, starts /bin/sleep 60 with the locked descriptor as its fd 3,
// prints "sleep PID" and exits: the sleep keeps the lock.
func helperInherit(args []string) int {
	f, err := Claim(args[0], Options{Method: Flock})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := f.Write(testRecord(os.Getpid(), "tok-inherit")); err != nil {
		fmt.Println("error", err)
		return 1
	}
	cmd := exec.Command("/bin/sleep", "60")
	cmd.ExtraFiles = []*os.File{f.OS()}
	if err := cmd.Start(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("sleep", cmd.Process.Pid)
	return 0
}

// openReport is what helperOpenAs prints, one per operation.
type openReport struct {
	Op         string
	EUID       int
	OK         bool   // the operation succeeded
	Method     string // lock method, when Claim succeeded
	Invalid    bool   // errors.Is(err, ErrInvalid)
	Permission bool   // errors.Is(err, fs.ErrPermission)
	Problem    string // InvalidError.Problem
	Path       string // InvalidError.Path
	Error      string
}

// helperOpenAs runs Open and then Claim on the data directory args[0] and
// prints a "result JSON" line for each.
func helperOpenAs(args []string) int {
	ops := []struct {
		name string
		fn   func() (*File, error)
	}{
		{"Open", func() (*File, error) { return Open(args[0], Options{}) }},
		{"Claim", func() (*File, error) { return Claim(args[0], Options{}) }},
	}
	for _, op := range ops {
		rep := openReport{Op: op.name, EUID: os.Geteuid()}
		f, err := op.fn()
		if err == nil {
			rep.OK, rep.Method = true, f.Method().String()
			f.Close()
		} else {
			rep.Error = err.Error()
			rep.Invalid = errors.Is(err, ErrInvalid)
			rep.Permission = errors.Is(err, fs.ErrPermission)
			var ie *InvalidError
			if errors.As(err, &ie) {
				rep.Problem, rep.Path = ie.Problem, ie.Path
			}
		}
		b, err := json.Marshal(rep)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Printf("result %s\n", b)
	}
	return 0
}
