package supervise

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/pidfile"
)

// TestReadRecord: a record of an older dirlockd (or of another holder) has
// no stop_signal, reload_signal or kill_mode, and means the defaults; a
// record of this one round-trips through the pidfile format; a value this
// version cannot read falls back to the default rather than to nothing.
func TestReadRecord(t *testing.T) {
	def := Recorded{Stop: unix.SIGTERM, Reload: unix.SIGHUP, KillMode: ControlGroup}
	if got := ReadRecord(nil); got != def {
		t.Errorf("no record: %+v, want %+v", got, def)
	}
	if got := ReadRecord(&pidfile.Record{Extra: map[string]string{ChildPIDKey: "12"}}); got != def {
		t.Errorf("an older record: %+v, want %+v", got, def)
	}
	rec := &pidfile.Record{PID: 1, DataDir: "/d", LockMethod: pidfile.Flock, Status: pidfile.Ready, Token: "t", Version: pidfile.Version, ShmID: -1,
		Extra: map[string]string{StopSignalKey: SignalName(unix.SIGINT), ReloadSignalKey: SignalName(unix.SIGUSR1), KillModeKey: string(Mixed), MainPIDKey: "42"}}
	back, err := pidfile.Parse(rec.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	want := Recorded{Stop: unix.SIGINT, Reload: unix.SIGUSR1, KillMode: Mixed, MainPID: 42}
	if got := ReadRecord(back); got != want {
		t.Errorf("round trip: %+v, want %+v", got, want)
	}
	bad := &pidfile.Record{Extra: map[string]string{StopSignalKey: "SIGBOGUS", ReloadSignalKey: "99", KillModeKey: "cgroup", MainPIDKey: "x"}}
	if got := ReadRecord(bad); got != def {
		t.Errorf("unreadable values: %+v, want the defaults %+v", got, def)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]unix.Signal{"TERM": unix.SIGTERM, "sigint": unix.SIGINT, "SIGHUP": unix.SIGHUP, "Usr1": unix.SIGUSR1, "9": unix.SIGKILL, "64": 64} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65", "-1", "BOGUS", "SIG"} {
		if got, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %v, want an error", in, got)
		}
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.Signal(37), 64} {
		if got, err := ParseSignal(SignalName(sig)); err != nil || got != sig {
			t.Errorf("ParseSignal(SignalName(%d)) = %v, %v", sig, got, err)
		}
	}
}
