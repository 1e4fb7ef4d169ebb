package users

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// Become makes the process run as spec, USER[:GROUP] (names or numbers),
// as setpriv --reuid --regid --init-groups and start-stop-daemon --chuid
// do: the supplementary groups of USER (initgroups), then the group (USER's
// primary group unless GROUP is given), then the user. USER, LOGNAME and
// HOME are set as systemd's User= sets them. Go's Setuid and friends change
// every thread of the process. Only root may change its user; anyone may
// "become" who it already is.
//
// dirlockd run --user calls it before the data directory is opened, so
// that the pidfile, the segment and the server's tree are all USER's: the
// start rule (the directory belongs to whoever holds it) applies to USER,
// and USER can stop and reload what it runs.
func Become(spec string) error {
	name, group, hasGroup := strings.Cut(spec, ":")
	u, err := lookupUser(name)
	if err != nil {
		return err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("user %s: uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("user %s: gid %q", name, u.Gid)
	}
	if hasGroup {
		g, err := lookupGroup(group)
		if err != nil {
			return err
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return fmt.Errorf("group %s: gid %q", group, g.Gid)
		}
	}
	if os.Geteuid() != 0 {
		if uid == os.Geteuid() && gid == os.Getegid() {
			return nil // already so: nothing to change
		}
		return errors.New("only root can change the user: run dirlockd as root, or leave --user out")
	}
	groups := []int{gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil && g != gid {
				groups = append(groups, g)
			}
		}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", groups, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	for k, v := range map[string]string{"USER": u.Username, "LOGNAME": u.Username, "HOME": u.HomeDir} {
		if v != "" {
			os.Setenv(k, v)
		}
	}
	return nil
}

// lookupUser finds a user by name, or by number when no user has that name
// (as chown does).
func lookupUser(s string) (*user.User, error) {
	u, err := user.Lookup(s)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.Atoi(s); nerr == nil {
		if u, err := user.LookupId(s); err == nil {
			return u, nil
		}
	}
	return nil, fmt.Errorf("no user %q (in /etc/passwd or NSS): %w", s, err)
}

func lookupGroup(s string) (*user.Group, error) {
	g, err := user.LookupGroup(s)
	if err == nil {
		return g, nil
	}
	if _, nerr := strconv.Atoi(s); nerr == nil {
		if g, err := user.LookupGroupId(s); err == nil {
			return g, nil
		}
	}
	return nil, fmt.Errorf("no group %q (in /etc/group or NSS): %w", s, err)
}
