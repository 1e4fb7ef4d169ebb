package cli

import (
	"os"
	"path/filepath"
)

// DocDir is where program prog's installed guides are: share/doc/PROG
// beside the bin/ that the running executable is in (resolving symlinks),
// where make install and Debian packages put them; "" when there is no such
// directory (a build run from its source tree).
func DocDir(prog string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	dir := filepath.Join(filepath.Dir(filepath.Dir(exe)), "share", "doc", prog)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return ""
	}
	return dir
}
