package lease

import (
	"fmt"
	"os"
	"path/filepath"
)

// Name is the agent's executable.
const Name = "dirlockd-etcd"

// NotFoundError says the agent is in none of the places it is looked for:
// dirlockd is installed without it.
type NotFoundError struct {
	Tried []string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("the etcd agent %s is not installed: tried %s and %s (install the package dirlockd-etcd; make install puts it in PREFIX/libexec/dirlockd, make build in bin/)",
		Name, e.Tried[0], e.Tried[1])
}

// Path finds the agent for the running executable: beside it (bin/ of a
// build), or in ../libexec/dirlockd/ from its directory (an install, where
// bin/ holds what users run and libexec/ what programs run).
func Path() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the etcd agent: %w", err)
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	dir := filepath.Dir(exe)
	tried := []string{filepath.Join(dir, Name), filepath.Join(filepath.Dir(dir), "libexec", "dirlockd", Name)}
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &NotFoundError{Tried: tried}
}

// StartAgent starts the agent found for the running executable (Path) and
// connects it to etcd for cfg (Start).
func StartAgent(cfg Config) (*Agent, error) {
	path, err := Path()
	if err != nil {
		return nil, err
	}
	return Start(path, cfg)
}
