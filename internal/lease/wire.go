package lease

import "time"

// The requests, a JSON object a line on the agent's standard input. Every
// request but dial and cancel runs on its own: renewals overlap, a waiting
// acquire does not hold up an inspection. Each gets one reply with its ID.
const (
	OpDial    = "dial"    // Config: connect (the first request)
	OpHolder  = "holder"  // who holds the key (Reply.Holder, nil: free)
	OpAcquire = "acquire" // Identity, Wait: take the key under a new lease (Reply.Lease)
	OpRenew   = "renew"   // Until: one renewal of the lease held (Reply.Renewal)
	OpRevoke  = "revoke"  // end the lease held, which deletes the key
	OpWatch   = "watch"   // Want: block until the key is free or held (Reply.Holder)
	OpGone    = "gone"    // block until the key of the lease held is deleted
	OpCancel  = "cancel"  // Ref: give up the request Ref (it replies "canceled"); no reply of its own
)

// Request is one request to the agent.
type Request struct {
	ID       int64         `json:"id"`
	Op       string        `json:"op"`
	Config   *Config       `json:"config,omitempty"`
	Identity *Identity     `json:"identity,omitempty"`
	Wait     bool          `json:"wait,omitempty"`
	Until    time.Duration `json:"until,omitempty"` // a time on Now's clock
	Want     string        `json:"want,omitempty"`  // free or held
	Ref      int64         `json:"ref,omitempty"`
}

// Reply is the agent's answer to the request ID.
type Reply struct {
	ID      int64      `json:"id"`
	Err     *WireError `json:"error,omitempty"`
	Holder  *Holder    `json:"holder,omitempty"`
	Lease   *Granted   `json:"lease,omitempty"`
	Renewal *Renewal   `json:"renewal,omitempty"`
}

// Granted is a lease just granted and the key put under it.
type Granted struct {
	ID    int64         `json:"id"`    // etcd's lease ID
	Token int64         `json:"token"` // the key's create revision: the fencing token
	TTL   time.Duration `json:"ttl"`   // the TTL etcd granted
	Sent  time.Duration `json:"sent"`  // when the grant was sent, on Now's clock
}

// Renewal is one renewal that succeeded: etcd cannot end the lease before
// Sent + TTL, since it cannot have received the request before it was sent.
type Renewal struct {
	Sent time.Duration `json:"sent"` // on Now's clock
	TTL  time.Duration `json:"ttl"`
}
