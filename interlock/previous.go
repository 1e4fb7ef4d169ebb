package interlock

import (
	"fmt"
	"time"

	"github.com/dirlockd/dirlockd/pidfile"
)

// Previous describes what the pidfile said when Acquire took the lock.
type Previous struct {
	Record *pidfile.Record // the previous holder's record, if readable
	Raw    []byte          // the content as found
	Err    error           // why Record is nil although Raw is not empty
}

// errEmpty describes a pidfile found empty: a start died between creating it
// and writing its first record.
var errEmpty = fmt.Errorf("%w: empty: a start died before writing its record", pidfile.ErrMalformed)

// Clean reports whether the previous holder released the directory itself.
func (p *Previous) Clean() bool {
	return p.Record != nil && p.Record.Status == pidfile.Stopped
}

func (p *Previous) String() string {
	switch {
	case p.Record != nil && p.Record.Extra[startFailedKey] != "":
		return fmt.Sprintf("the previous start (PID %d, %s) failed before it started anything: %s",
			p.Record.PID, p.Record.StartTime.Local().Format(time.RFC3339), p.Record.Extra[startFailedKey])
	case p.Record == nil:
		return fmt.Sprintf("the pidfile held no readable record (%v); its previous holder is unknown and left no survivors", p.Err)
	case p.Clean():
		return fmt.Sprintf("previous holder PID %d (started %s) shut down cleanly",
			p.Record.PID, p.Record.StartTime.Local().Format(time.RFC3339))
	}
	return fmt.Sprintf("previous holder PID %d (started %s) did not shut down cleanly",
		p.Record.PID, p.Record.StartTime.Local().Format(time.RFC3339))
}
