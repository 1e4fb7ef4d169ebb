//go:build soak

package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestLeaseSoak is make soak-lease (build tag soak, never in CI): the
// partition harness's faults in turn, round after round, on every etcd
// version of the matrix at once (a lab each, in parallel: the rounds wait
// on timers, not on the processor), until DIRLOCKD_SOAK_EVENTS fault
// events (default 1000) have been made in all, or DIRLOCKD_SOAK_FOR has
// passed (a shorter run, which the report says); healed between rounds.
// Any round that breaks a rule (two servers at once, a takeover later than
// its bound, a holder lost to a fault that did not touch it) fails the soak
// there. With DIRLOCKD_SOAK_REPORT, the verdict and figures go to that
// file's lease section (docs/reliability.md).
func TestLeaseSoak(t *testing.T) {
	target := 1000
	if s := os.Getenv("DIRLOCKD_SOAK_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("DIRLOCKD_SOAK_EVENTS=%q: want a positive count", s)
		}
		target = n
	}
	var limit time.Duration // DIRLOCKD_SOAK_FOR: stop after that long, events or not
	if s := os.Getenv("DIRLOCKD_SOAK_FOR"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("DIRLOCKD_SOAK_FOR=%q: want a positive duration", s)
		}
		limit = d
	}
	began := time.Now()
	var events atomic.Int64 // across the versions
	stats := make([]partStats, len(testutil.EtcdVersions))
	overlap := make([]bool, len(testutil.EtcdVersions))
	tokens := make([]int, len(testutil.EtcdVersions))
	least := make([]float64, len(testutil.EtcdVersions))
	for i := range least {
		least[i] = -1
	}
	t.Run("matrix", func(t *testing.T) {
		for i, v := range testutil.EtcdVersions {
			name := testutil.EtcdVersionName(v)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				p := newPartLab(t, v)
				for round := 0; events.Load() < int64(target) && (limit == 0 || time.Since(began) < limit); round++ {
					r := p.round(t, round, partFaults[round%len(partFaults)])
					stats[i].add(r)
					t.Logf("etcd %s: %d/%d fault events in all", name, events.Add(int64(r.events)), target)
				}
				if stats[i].rounds == 0 {
					// Started after the others had made the events: go
					// test ran fewer subtests at once than there are
					// versions (-parallel, GOMAXPROCS by default).
					t.Fatalf("etcd %s ran no round: run the soak with -parallel %d at least (make soak-lease does)", name, len(testutil.EtcdVersions))
				}
				failed := t.Failed()
				least[i], tokens[i] = p.checkWitness(t)
				overlap[i] = !failed && t.Failed()
				t.Logf("etcd %s: %s", name, stats[i])
			})
		}
	})
	var all partStats
	overlaps, toks, gap := 0, 0, -1.0
	for i := range testutil.EtcdVersions {
		all.merge(stats[i])
		if overlap[i] {
			overlaps++
		}
		toks += tokens[i]
		if least[i] >= 0 && (gap < 0 || least[i] < gap) {
			gap = least[i]
		}
	}
	t.Logf("all: %s; %d tokens, least gap between two holders' beats %.2fs", all, toks, gap)
	path := os.Getenv("DIRLOCKD_SOAK_REPORT")
	if path == "" {
		return
	}
	verdict := "PASS"
	if t.Failed() {
		verdict = "FAIL"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## The etcd lease under partitions: `make soak-lease`\n\n")
	short := ""
	if all.events < target {
		short = fmt.Sprintf(" **Stopped by its time limit (%v) short of the target: a shorter run than the 1000 events the soak is for.**", limit)
	}
	fmt.Fprintf(&b, "The last run: %s, %d fault events (target %d) in %d rounds over %v, the %d versions at once, each in a lab of its own, on the project's machine (2 vCPU, shared), TTL %v, etcd election timeout 2 s.%s\n\n",
		time.Now().UTC().Format("2006-01-02"), all.events, target, all.rounds, time.Since(began).Round(time.Second), len(testutil.EtcdVersions), partTTL, short)
	fmt.Fprintf(&b, "**Verdict: %s.** Overlaps (two servers' beats interleaved, one clock): %d, over %d fencing tokens; the least gap between two holders' beats: %.2f s. Takeover bound (docs/lease.md): %v from the fault, or %v from the majority's new leader when its election took longer than two election timeouts. Elections: %d, the longest %v after the fault, %d of them longer than two election timeouts.\n\n",
		verdict, overlaps, toks, gap, partBound, afterLeader, len(all.elections), quantile(all.elections, 1), all.lateElections())
	b.WriteString("| etcd | rounds | fault events | worst fault to holder's death | takeovers | p50 | p99 | max | heal to a holder, where nobody held at the heal: rounds, max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, s partStats) {
		fmt.Fprintf(&b, "| %s | %d | %d | %v | %d | %v | %v | %v | %d, %v |\n", name, s.rounds, s.events, quantile(s.deaths, 1),
			len(s.takeovers), quantile(s.takeovers, 0.5), quantile(s.takeovers, 0.99), quantile(s.takeovers, 1), len(s.healToHolder), quantile(s.healToHolder, 1))
	}
	for i, v := range testutil.EtcdVersions {
		row(testutil.EtcdVersionName(v), stats[i])
	}
	row("all", all)
	b.WriteString("\nFaults, in turn on each version: " + faultNames() + ". A fault event is one cut, one pause, or one down of a flapping link; " +
		"takeover times are from the fault to the waiter's server, in the rounds where the waiter took over before the heal; Debian's etcd is 3.4.23.\n")
	if err := writeSection(path, soakSection, b.String()); err != nil {
		t.Error(err)
	}
}

// merge adds o's rounds to s.
func (s *partStats) merge(o partStats) {
	s.rounds += o.rounds
	s.events += o.events
	s.deaths = append(s.deaths, o.deaths...)
	s.takeovers = append(s.takeovers, o.takeovers...)
	s.healToHolder = append(s.healToHolder, o.healToHolder...)
	s.releases = append(s.releases, o.releases...)
	s.elections = append(s.elections, o.elections...)
}

func faultNames() string {
	var s []string
	for _, f := range partFaults {
		s = append(s, f.name)
	}
	return strings.Join(s, "; ")
}

// writeSection puts body between the markers of section name in the file
// at path, replacing what was there, or at its end.
func writeSection(path, name, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	begin, end := "<!-- "+name+" -->\n", "<!-- /"+name+" -->\n"
	s := string(old)
	block := begin + body + end
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + block + s[j+len(end):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
