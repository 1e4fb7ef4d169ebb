package lease

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The token file ("the fence file" to users, NAME.fence beside the
// pidfile) remembers, in the data directory, the highest fencing
// token that ever ran there. etcd's revisions only grow, so a start with a
// lower token means etcd's history went back (restored from an old
// snapshot, or another cluster behind the same endpoints): its lease proves
// nothing about the holders of the old history, one of whom may still run.
// Such a start is refused. The file is written, and synced, before the
// server starts, so a token that ran is never forgotten.

// TokenFileName is the token file's name for a pidfile name: dirlockd.pid
// gives dirlockd.fence.
func TokenFileName(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".fence"
}

// TokenBackError says a start's token is below one that already ran here.
type TokenBackError struct {
	Path        string
	Seen, Token int64
	SeenKey     string
}

func (e *TokenBackError) Error() string {
	return fmt.Sprintf("fencing token %d is below %d, which already ran in this directory (fence file %s, lease key %s): etcd's revisions went back (restored from an old snapshot, or another cluster?)",
		e.Token, e.Seen, e.Path, e.SeenKey)
}

// AdvanceTokenFile refuses token if the token file in dir holds a higher
// one, and records token (with key) otherwise, durably, before the server
// starts.
func AdvanceTokenFile(dir, name string, token int64, key string) error {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read the fence file: %w", err)
	default:
		seen, seenKey, err := parseTokenFile(b)
		if err != nil {
			return fmt.Errorf("fence file %s: %w (remove it only if no server that used it can still run)", path, err)
		}
		if seen > token {
			return &TokenBackError{Path: path, Seen: seen, Token: token, SeenKey: seenKey}
		}
	}
	return writeTokenFile(dir, path, fmt.Sprintf("fencing_token=%d\nlease_key=%s\n", token, key))
}

func parseTokenFile(b []byte) (int64, string, error) {
	var token int64 = -1
	var key string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "fencing_token":
			t, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, "", fmt.Errorf("bad fencing_token %q", v)
			}
			token = t
		case "lease_key":
			key = v
		}
	}
	if token < 0 {
		return 0, "", errors.New("no fencing_token line")
	}
	return token, key, nil
}

// writeTokenFile replaces path with content, durably: a temporary file,
// fsynced, renamed over it, and the directory fsynced.
func writeTokenFile(dir, path, content string) error {
	f, err := os.CreateTemp(dir, ".fence-*")
	if err != nil {
		return fmt.Errorf("write the fence file: %w", err)
	}
	defer os.Remove(f.Name()) // gone after the rename; left only on failure
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("write the fence file %s: %w", path, err)
	}
	return nil
}
