package main

import (
	"os"
	"path/filepath"
)

// docDir is where the installed guides (README.md, cli.md, lease.md, ...)
// are: share/doc/dirlockd beside the bin/ that dirlockd runs from, where
// make install and the Debian package put them; "" when they are not there
// (a build in the source tree, whose docs/ holds them).
func docDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	dir := filepath.Join(filepath.Dir(filepath.Dir(exe)), "share", "doc", "dirlockd")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return ""
	}
	return dir
}

// docsPointer says in --help where the guides are.
func docsPointer() string {
	if d := docDir(); d != "" {
		return d + "/"
	}
	return "docs/ in the source tree"
}
