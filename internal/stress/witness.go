package stress

import (
	"errors"
	"fmt"
)

// Witness writes to the witness files of a directory for a holder that does
// not loop in Work: a server that "dirlockd run" started, which holds
// through its wrapper's lock and knows its hold by its DIRLOCKD_TOKEN, or a
// harness that kills holders and confirms their deaths. Its lines are the
// ones Work and Run write, so Check judges them by the same rules: a hold
// that began while another was inside is a violation unless a killed line
// of the one inside follows, whose SIGKILL was sent before the other
// entered.
//
// The files may be anywhere a test likes, not only in a data directory:
// they are opened as in one (pidfile.OpenInDir).
type Witness struct {
	dir string
	log *writer
}

// NewWitness returns a writer with id of the witness files in dir, which it
// creates if they are missing; host is the label its lines carry. An empty
// id makes a fresh one. Ids must not repeat: a writer numbers its lines,
// and a second writer with the same id looks like lost or repeated lines. A
// process that holds once may take its hold's token for an id, which lets
// whoever kills it name it in Killed.
//
// A Witness's lines belong to no stress run: a hold of it that a later
// enter overlaps and that no killed line ends is a violation when the log
// is checked, never pending.
func NewWitness(dir, id, host string) (*Witness, error) {
	if err := prepare(dir); err != nil {
		return nil, err
	}
	if id == "" {
		var err error
		if id, err = newID(); err != nil {
			return nil, err
		}
	}
	lw, err := newWriter(dir, id, "", host)
	if err != nil {
		return nil, err
	}
	return &Witness{dir: dir, log: lw}, nil
}

// ID returns the writer's id.
func (w *Witness) ID() string { return w.log.ID() }

// Hold is a hold a Witness logged the enter of.
type Hold struct {
	w     *Witness
	token string
	read  int64 // the counter the enter read; -1 if unreadable
}

// Enter reads the counter and logs the enter of the hold token with it. A
// counter file that holds something else than a number is evidence, not a
// failure: the enter says so, and the hold's Exit leaves the file alone.
func (w *Witness) Enter(token string) (*Hold, error) {
	f, err := openCounter(w.dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := readCounter(f)
	e := Event{Ev: EvEnter, Token: token, Counter: v}
	if errors.Is(err, errCounter) {
		e.Counter, e.Err = -1, err.Error()
	} else if err != nil {
		return nil, err
	}
	if err := w.log.Append(e); err != nil {
		return nil, err
	}
	return &Hold{w: w, token: token, read: e.Counter}, nil
}

// Exit writes the counter one more than the enter read, and logs the exit.
// The time between Enter and Exit is the window in which a second holder
// loses an increment.
func (h *Hold) Exit() error {
	written := int64(-1)
	if h.read >= 0 {
		f, err := openCounter(h.w.dir)
		if err != nil {
			return err
		}
		written = h.read + 1
		err = writeCounter(f, written, h.w.log.sync)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	return h.w.log.Append(Event{Ev: EvExit, Token: h.token, Counter: written})
}

// Killed logs that the writer victim (PID victimPID), inside the hold token,
// was sent SIGKILL at signalled (MonoNow before the kill) and is dead now:
// gone or a zombie, unable to write anything more. Call it only once the
// death is confirmed and before anyone else may enter.
func (w *Witness) Killed(victim string, victimPID int, token string, signalled int64) error {
	return w.log.Append(Event{Ev: EvKilled, Token: token, Victim: victim, VictimPID: victimPID, SignalMono: signalled})
}

// MonoNow reads CLOCK_MONOTONIC, the clock of the lines' Mono and
// SignalMono: comparable between processes of one boot and time namespace.
func MonoNow() int64 { return monoNow() }
