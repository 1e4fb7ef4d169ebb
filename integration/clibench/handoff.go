package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// handoff compares `dirlockd stress --workers N` (whole acquisitions and
// releases, waiting workers in --wait) with a bare loop of N goroutines
// doing open, flock (blocking), pwrite, fsync, unlock, close on one file,
// in the same run, and prints hand-offs a second and the waits.
func handoff(bin string, workers int, d time.Duration) int {
	root, err := os.MkdirTemp("", "clibench-handoff.")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(root)
	bare := bareRate(filepath.Join(root, "bare"), workers, d)
	fmt.Printf("%-34s %10s %10s %10s %10s\n", "loop", "holds/s", "wait p50", "wait p99", "wait max")
	fmt.Printf("%-34s %10.0f %10s %10s %10s\n", fmt.Sprintf("bare flock loop, %d workers", workers), bare, "-", "-", "-")
	code := 0
	for _, hold := range []string{"0", "1ms"} {
		dir := filepath.Join(root, "stress-"+hold)
		if err := os.Mkdir(dir, 0o700); err != nil {
			fatal(err)
		}
		out, err := exec.Command(bin, "stress", "-D", dir, "--workers", strconv.Itoa(workers), "--hold", hold,
			"--duration", d.String(), "--log-level", "error").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "stress --hold %s: %v\n%s", hold, err, out)
			code = 1
			continue
		}
		rate := regexp.MustCompile(`acquisitions\s+\d+ in \S+, ([\d.]+)/s`).FindSubmatch(out)
		wait := regexp.MustCompile(`acquire wait\s+p50 (\S+), p99 (\S+), max (\S+)`).FindSubmatch(out)
		if rate == nil || wait == nil {
			fmt.Fprintf(os.Stderr, "stress --hold %s: cannot read its report:\n%s", hold, out)
			code = 1
			continue
		}
		r, _ := strconv.ParseFloat(string(rate[1]), 64)
		verdict := ""
		if hold == "0" {
			verdict = fmt.Sprintf("  %.2f of bare (target >= 0.5)", r/bare)
			if r < bare/2 {
				verdict += " over"
				code = 1
			} else {
				verdict += " PASS"
			}
		}
		fmt.Printf("%-34s %10.0f %10s %10s %10s%s\n", fmt.Sprintf("dirlockd stress --hold %s", hold), r, wait[1], wait[2], wait[3], verdict)
	}
	return code
}

func bareRate(path string, workers int, d time.Duration) float64 {
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	pid := []byte("12345\n")
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) {
				fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					fatal(err)
				}
				if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
					fatal(err)
				}
				unix.Pwrite(fd, pid, 0)
				unix.Fsync(fd)
				unix.Flock(fd, unix.LOCK_UN)
				unix.Close(fd)
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}
