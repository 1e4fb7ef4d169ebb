package testutil

import (
	"encoding/json"
	"errors"
	"strings"
)

// Report is one line of "dirlockd check --json" or "status --json", as the
// tests read it. It mirrors cmd/dirlockd's report by its JSON names, not by
// sharing the type, so that a change of the command's output breaks the
// tests that read it.
type Report struct {
	Datadir  string `json:"datadir"`
	State    string `json:"state"`
	Service  string `json:"service"`
	PID      int    `json:"pid"`
	ChildPID int    `json:"child_pid"`
	MainPID  int    `json:"main_pid"`
	Host     string `json:"host"`
	Status   string `json:"status"`
	ShmKey   string `json:"shm_key"`
	ShmID    *int   `json:"shm_id"`
	Holders  []int  `json:"holders"`
	Orphans  []int  `json:"orphans"`
	Reason   string `json:"reason"`
}

// ParseReport parses the first line of out that is a JSON object.
func ParseReport(out string) (Report, error) {
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "{") {
			var r Report
			err := json.Unmarshal([]byte(line), &r)
			return r, err
		}
	}
	return Report{}, errors.New("no JSON line")
}

// Extra keys of the pidfile record (docs/format.md) that the tests read,
// mirrored as Report is: cmd/dirlockd writes child_pid, interlock the
// heartbeat.
const (
	RecordChildPID  = "child_pid"
	RecordHeartbeat = "heartbeat"
)
