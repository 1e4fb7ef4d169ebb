package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/dirlockd/dirlockd/internal/control"
	"github.com/dirlockd/dirlockd/internal/lease"
)

// report is what check and status say about one data directory, as a line
// and as JSON: the directory's state (control.Report) and, with --etcd,
// the lease key's (lease.go's addLease folds it in).
type report struct {
	*control.Report
	Lease *lease.Report `json:"lease,omitempty"`
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// inspectFlags are the flags of check and status besides the global ones.
type inspectFlags struct {
	asJSON bool
	lease  leaseFlags
}
