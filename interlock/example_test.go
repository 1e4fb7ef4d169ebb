package interlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/pidfile"
)

// A long-running program holds its data directory: it acquires it, keeps it
// with a Keeper, works until it is told to stop or the directory is lost,
// and releases it once its work has stopped.
func Example() {
	dir, err := os.MkdirTemp("", "data")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := interlock.Acquire(context.Background(), dir, interlock.Options{Recheck: 100 * time.Millisecond})
	if err != nil {
		log.Fatal(err) // interlock.ErrHeld, ErrOrphans, ...: someone else works there
	}
	defer l.Release() // last: once the program no longer touches dir
	k, err := l.Keep(interlock.KeepOptions{Log: slog.Default()})
	if err != nil {
		log.Fatal(err)
	}
	k.SetStatus(pidfile.Ready)

	stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()

	// ... the program works in dir, until an operator's mistake:
	os.Remove(filepath.Join(dir, pidfile.DefaultName))

	select {
	case <-stop.Done():
		fmt.Println("told to stop")
	case err := <-k.Lost():
		// Another instance may start in dir now: stop working there.
		fmt.Println("lost the directory:", errors.Is(err, interlock.ErrLost))
	}
	// Output: lost the directory: true
}
