package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/dirlockd/dirlockd/internal/cli"
)

// version is the release this binary was built from, set at link time:
// make build passes -ldflags "-X main.version=$(git describe --tags --always --dirty)".
// Empty in a plain go build or go install, where the build info answers.
var version string

var versionDoc = doc{
	name:     "version",
	summary:  "print the version (also -V, --version)",
	synopsis: []string{"version", "--version", "-V"},
	brief:    `Print dirlockd's version and the Go toolchain that built it, and exit 0.`,
	about: `Print dirlockd's version and the Go toolchain that built it, and exit 0.

The version is the one make build records (git describe --tags --always
--dirty), else the module version of go install MODULE@VERSION, else the
commit a go build from a git checkout records (with +dirty for uncommitted
changes), else devel.`,
	examples: "  dirlockd version\n",
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprintln(stdout, versionLine())
		return 0
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help"):
		versionDoc.help(stdout, nil)
		return 0
	}
	return usageError(stderr, "version", "unexpected argument %q: version takes none", args[0])
}

// versionLine is what dirlockd version prints: "dirlockd VERSION (GOVERSION
// GOOS/GOARCH)".
func versionLine() string {
	bi, _ := debug.ReadBuildInfo()
	return fmt.Sprintf("dirlockd %s (%s %s/%s)", cli.Version(version, bi), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
