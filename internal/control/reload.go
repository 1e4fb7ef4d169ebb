package control

import (
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/dirlockd/dirlockd/interlock"
	"github.com/dirlockd/dirlockd/internal/supervise"
)

// Reload asks the server of dir to reload its configuration, as dirlockd
// reload does, and does not wait: the proven holder, dirlockd run, gets
// SIGHUP and passes the server its reload signal. When the holder is dead
// and the recorded main process runs on, that process, pinned and proven a
// survivor, gets the recorded reload signal directly. Its log lines carry
// the directory as datadir.
func Reload(base *slog.Logger, dir string, opts interlock.Options) Outcome {
	log := base.With("datadir", dir)
	rep, err := interlock.Inspect(dir, opts)
	if err != nil {
		log.Error("cannot inspect the data directory", "err", err)
		return Unreadable
	}
	if rep.State == interlock.Free || rep.State == interlock.Stale {
		log.Error("not running: nothing to reload", "reason", rep.Message())
		return NotRunning
	}
	if !mayAct(log, rep, "reload") {
		return Failed
	}
	how := supervise.ReadRecord(rep.Record)
	if rep.State == interlock.Orphaned {
		return reloadUnsupervised(base.With("datadir", rep.Dir), rep, how)
	}
	holder, err := rep.PinHolder()
	if err != nil {
		log.Error("holder not proven; nothing signalled", "err", err)
		return Failed
	}
	defer holder.Close()
	if err := holder.Signal(unix.SIGHUP); err != nil {
		log.Error("signal failed", "pid", holder.PID, "err", err)
		return Failed
	}
	log.Info("asked the holder to reload the server", "pid", holder.PID, "main_pid", how.MainPID, "reload_signal", supervise.SignalName(how.Reload))
	return Done
}

// reloadUnsupervised signals the recorded main process of a dead holder,
// if it is a proven survivor.
func reloadUnsupervised(log *slog.Logger, rep *interlock.Report, how supervise.Recorded) Outcome {
	pinned, _, err := rep.PinSurvivors()
	if err != nil {
		log.Error("cannot pin the survivors", "err", err)
		return Failed
	}
	defer closeAll(pinned)
	for _, p := range pinned {
		if p.PID == how.MainPID && how.MainPID > 0 {
			if err := p.Signal(how.Reload); err != nil {
				log.Error("signal failed", "pid", p.PID, "err", err)
				return Failed
			}
			log.Warn("dirlockd run is dead: sent the reload signal to the server's main process directly", "main_pid", how.MainPID, "signal", supervise.SignalName(how.Reload))
			return Done
		}
	}
	log.Error("the holder is dead and its main process is not among the survivors: nothing to reload", "reason", rep.Message(),
		"hint", "stop the survivors: dirlockd stop -D "+rep.Dir+" --survivors")
	return NotRunning
}
