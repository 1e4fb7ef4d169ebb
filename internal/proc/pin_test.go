package proc

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPinTree pins a child and its child, signals the tree through the
// pidfds, and checks that a pinned process reports its exit.
func TestPinTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var tree Tree
	deadline := time.Now().Add(10 * time.Second)
	for {
		tree = PinBelow(Self())
		if len(tree) == 2 || time.Now().After(deadline) {
			break
		}
		tree.Close()
		time.Sleep(10 * time.Millisecond)
	}
	defer tree.Close()
	if len(tree) != 2 || tree[0].PID != cmd.Process.Pid || tree[1].Parent != cmd.Process.Pid {
		t.Fatalf("PinBelow(Self()) = %+v; want sh %d, then its sleep", tree, cmd.Process.Pid)
	}
	if got := tree.Without(cmd.Process.Pid); len(got) != 0 {
		t.Errorf("Without(sh) = %v; want nothing", got.PIDs())
	}
	if !slices.Equal(tree.PIDs(), []int{min(tree[0].PID, tree[1].PID), max(tree[0].PID, tree[1].PID)}) {
		t.Errorf("PIDs() = %v", tree.PIDs())
	}
	sleeper := tree[1]
	if !sleeper.Alive() || sleeper.WaitExit(0) {
		t.Fatal("the sleep is not alive")
	}
	if n := tree.Without(cmd.Process.Pid + 0).Signal(unix.SIGKILL); n != 0 {
		t.Errorf("Signal through an empty tree reached %d", n)
	}
	if err := sleeper.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !sleeper.WaitExit(10 * time.Second) {
		t.Fatal("no exit seen through the pidfd in 10 s")
	}
	if err := cmd.Wait(); err != nil {
		t.Logf("sh: %v", err)
	}
	if tree[0].Alive() || !tree[0].WaitExit(0) {
		t.Error("sh is reaped but its pidfd says alive")
	}
	if p, ok := PinDescendant(os.Getpid(), os.Getppid()); !ok {
		t.Error("PinDescendant(self, parent) failed")
	} else {
		p.Close()
	}
	if p, ok := PinDescendant(os.Getppid(), os.Getpid()); ok {
		p.Close()
		t.Error("PinDescendant(parent, self) succeeded")
	}
}
