//go:build !manpages

package main

import "io"

// manGenerator is nil in release builds: dirlockd __man exists only in a
// build with -tags manpages (man_on.go; make man).
func manGenerator() func(cmds []*subcommand, args []string, stderr io.Writer) int { return nil }
