//go:build faultinject

package main

import (
	"fmt"
	"os"

	"github.com/dirlockd/dirlockd/interlock"
)

// fault fails the named point of run when $DIRLOCKD_FAULT names it, so that
// tests can reach paths the kernel does not let them provoke at will.
func fault(point string) error {
	if os.Getenv(interlock.FaultEnv) == point {
		return fmt.Errorf("fault injected at %s", point)
	}
	return nil
}
