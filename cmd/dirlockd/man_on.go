//go:build manpages

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"

	"github.com/dirlockd/dirlockd/internal/exitcode"
)

// manGenerator returns dirlockd __man DIR: write the man pages, in roff,
// into DIR. make man runs it. A page's date is the day its text last
// changed: a page already in DIR that says the same keeps its own.
func manGenerator() func(cmds []*subcommand, args []string, stderr io.Writer) int {
	return func(cmds []*subcommand, args []string, stderr io.Writer) int {
		if len(args) != 1 {
			return usageError(stderr, manCommand, "want the directory to write the man pages to")
		}
		today := time.Now().UTC().Format(time.DateOnly)
		for name, md := range manPages(cmds) {
			path := filepath.Join(args[0], name)
			page := md2man.Render([]byte(strings.ReplaceAll(md, manDatePlaceholder, today)))
			if old, err := os.ReadFile(path); err == nil {
				if date := manDate(old); date != "" && bytes.Equal(md2man.Render([]byte(strings.ReplaceAll(md, manDatePlaceholder, date))), old) {
					continue
				}
			}
			if err := os.WriteFile(path, page, 0o644); err != nil {
				fmt.Fprintf(stderr, "dirlockd %s: %v\n", manCommand, err)
				return exitcode.Internal
			}
		}
		return 0
	}
}

// manDate is the date of a roff page's .TH line.
func manDate(page []byte) string {
	line, _, _ := bytes.Cut(page[bytes.Index(page, []byte("\n.TH "))+1:], []byte("\n"))
	if f := strings.Split(string(line), `"`); len(f) >= 3 {
		return f[1]
	}
	return ""
}
