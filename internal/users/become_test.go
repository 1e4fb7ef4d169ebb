package users

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// becomeEnv makes the test binary a child that calls Become with the specs
// it names (comma-separated, in turn) and prints who it is then.
const becomeEnv = "USERS_TEST_BECOME"

func TestMain(m *testing.M) {
	if specs, ok := os.LookupEnv(becomeEnv); ok {
		for _, spec := range strings.Split(specs, ",") {
			if err := Become(spec); err != nil {
				fmt.Printf("%s: %v\n", spec, err)
				os.Exit(1)
			}
		}
		groups, _ := syscall.Getgroups()
		fmt.Printf("uid=%d euid=%d gid=%d egid=%d groups=%v USER=%s HOME=%s\n",
			os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid(), groups, os.Getenv("USER"), os.Getenv("HOME"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// become runs a child that calls Become with specs, and returns what it
// printed and whether it succeeded.
func become(t *testing.T, specs string) (string, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), becomeEnv+"="+specs, "USER=root", "HOME=/root")
	out, err := cmd.Output()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), err == nil
}

// TestBecome: as root, the real and effective user and group, the
// supplementary groups and USER and HOME all become the user's, by name or
// by number, with the user's group or the one given; the user then can
// "become" itself again, and cannot become root.
func TestBecome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root: Become changes the user")
	}
	const nobody = "uid=65534 euid=65534 gid=65534 egid=65534 groups=[65534] USER=nobody HOME=/nonexistent"
	const notRoot = "only root can change the user: run dirlockd as root, or leave --user out"
	for _, c := range []struct{ specs, want string }{
		{"nobody", nobody},
		{"65534", nobody}, // no user has that name: the number
		// GROUP as the group; USER's own groups stay supplementary.
		{"nobody:root", "uid=65534 euid=65534 gid=0 egid=0 groups=[0 65534] USER=nobody HOME=/nonexistent"},
		{"nobody:0", "uid=65534 euid=65534 gid=0 egid=0 groups=[0 65534] USER=nobody HOME=/nonexistent"},
		{"nobody,nobody", nobody},
		{"root", "uid=0 euid=0 gid=0 egid=0 groups=[0] USER=root HOME=/root"},
		{"nobody,root", "root: " + notRoot},
		{"nobody,nobody:root", "nobody:root: " + notRoot},
	} {
		got, ok := become(t, c.specs)
		if got != c.want || ok != !strings.Contains(c.want, notRoot) {
			t.Errorf("Become(%s): exit ok %v,\n got %s\nwant %s", c.specs, ok, got, c.want)
		}
	}
}

func TestBecomeUnknown(t *testing.T) {
	for spec, want := range map[string]string{
		"dl21c-no-such-user":      `no user "dl21c-no-such-user"`,
		"nobody:dl21c-no-such-gr": `no group "dl21c-no-such-gr"`,
		"4000000000":              `no user "4000000000"`,
	} {
		if err := Become(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Become(%s) = %v, want %s", spec, err, want)
		}
	}
}
