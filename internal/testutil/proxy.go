package testutil

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on a loopback port that can delay the bytes coming
// back from the target, or black-hole the traffic both ways (bytes are
// held, not dropped: TCP would resend them anyway).
type Proxy struct {
	Addr   string // host:port to dial instead of the target
	target string
	l      net.Listener

	mu    sync.Mutex
	delay time.Duration
	hole  bool
	conns []net.Conn
}

// StartProxy starts a proxy to target; it is closed when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// SetDelay delays every chunk from the target by d.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// BlackHole stops (true) or resumes (false) all traffic.
func (p *Proxy) BlackHole(on bool) {
	p.mu.Lock()
	p.hole = on
	p.mu.Unlock()
}

func (p *Proxy) state() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.hole
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(u, c, false)
		go p.pipe(c, u, true)
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst; back says src is the target.
func (p *Proxy) pipe(dst, src net.Conn, back bool) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	defer dst.Close()
	for c := range q {
		for {
			delay, hole := p.state()
			if !back {
				delay = 0
			}
			if hole {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if w := time.Until(c.at.Add(delay)); w > 0 {
				time.Sleep(min(w, 10*time.Millisecond))
				continue
			}
			break
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}
