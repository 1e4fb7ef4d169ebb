// Package users names the users that messages speak of: "postgres (uid
// 101)", as ls -l and ps name them, with the number a user may need for
// chown or find; and makes the process run as one (Become, for run
// --user).
package users

import (
	"fmt"
	"os/user"
	"strconv"
)

// Name returns "NAME (uid N)", or "uid N" when the user database does not
// know the uid (a container's files, a deleted user).
func Name(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil && u.Username != "" {
		return fmt.Sprintf("%s (uid %s)", u.Username, s)
	}
	return "uid " + s
}

// Login returns the user name of uid for a command line ("postgres"), or
// the number when the user database does not know it (runuser and setpriv
// accept both).
func Login(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil && u.Username != "" {
		return u.Username
	}
	return s
}
