package cli

import "runtime/debug"

// Version picks the most precise version a build recorded: linked, the one
// the linker set (-ldflags -X, from git describe); else the module's
// version of go install MODULE@VERSION; else "devel-" and the VCS commit of
// a go build in a checkout (+dirty for uncommitted changes); else "devel".
// bi is debug.ReadBuildInfo's.
func Version(linked string, bi *debug.BuildInfo) string {
	if linked != "" {
		return linked
	}
	if bi == nil {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev == "" {
		return "devel"
	}
	return "devel-" + rev[:min(len(rev), 12)] + dirty
}
