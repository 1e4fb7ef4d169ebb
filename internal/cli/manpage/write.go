package manpage

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
)

// Write renders pages (Markdown by file name) to roff and writes them into
// dir. A page's date is the day its text last changed: a page already in
// dir that says the same keeps its own date and is not written; any other
// is dated today (UTC).
func Write(dir string, pages map[string]string, today time.Time) error {
	date := today.UTC().Format(time.DateOnly)
	for name, md := range pages {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil {
			if d := titleDate(old); d != "" && bytes.Equal(render(md, d), old) {
				continue
			}
		}
		if err := os.WriteFile(path, render(md, date), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func render(md, date string) []byte {
	return md2man.Render([]byte(strings.ReplaceAll(md, DatePlaceholder, date)))
}

// titleDate is the date of a roff page's .TH line, "" if it has none.
func titleDate(page []byte) string {
	i := bytes.Index(page, []byte("\n.TH "))
	if i < 0 && !bytes.HasPrefix(page, []byte(".TH ")) {
		return ""
	}
	line, _, _ := bytes.Cut(page[i+1:], []byte("\n"))
	if f := strings.Split(string(line), `"`); len(f) >= 3 {
		return f[1]
	}
	return ""
}
