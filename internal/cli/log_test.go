package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	for _, c := range []struct {
		format, level string
		want          string // a part of the line logged, "" for none
		unwanted      string
	}{
		{"logfmt", "info", `level=INFO msg="hello\nworld" dir=/srv`, ""},
		{"auto", "info", `level=INFO msg="hello\nworld" dir=/srv`, ""}, // not a terminal
		{"json", "info", `"level":"INFO","msg":"hello\nworld","dir":"/srv"}`, ""},
		{"text", "info", `INF hello\nworld dir=/srv`, "\n\x1b"},
		{"logfmt", "error", "", "hello"},
	} {
		var b bytes.Buffer
		log, err := NewLogger(c.format, c.level, &b)
		if err != nil {
			t.Fatalf("%s %s: %v", c.format, c.level, err)
		}
		log.Info("hello\nworld", "dir", "/srv")
		out := strings.TrimSuffix(b.String(), "\n")
		if !strings.Contains(out, c.want) || (c.unwanted != "" && strings.ContainsAny(out, c.unwanted)) {
			t.Errorf("%s %s: logged %q, want %q in it", c.format, c.level, out, c.want)
		}
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := NewLogger(bad[0], bad[1], &bytes.Buffer{}); err == nil {
			t.Errorf("NewLogger(%q, %q): no error", bad[0], bad[1])
		}
	}
}

func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	if IsTerminal(&bytes.Buffer{}) || IsTerminal(null) || !IsTerminal(pty) {
		t.Errorf("IsTerminal: buffer %v, /dev/null %v, a pty %v; want false, false, true", IsTerminal(&bytes.Buffer{}), IsTerminal(null), IsTerminal(pty))
	}
}
