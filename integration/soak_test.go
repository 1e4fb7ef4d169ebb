//go:build soak

package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestLeaseSoak is make soak-lease (build tag soak, never in CI): the
// partition harness's faults, every one on every etcd version of the
// matrix, round after round, until DIRLOCKD_SOAK_EVENTS fault events
// (default 1000) have been made, or DIRLOCKD_SOAK_FOR has passed (a
// shorter run, which the report says); healed between rounds. Any round that
// breaks a rule (two servers at once, a takeover later than partBound, a
// holder lost to a fault that did not touch it) fails the soak there. With
// DIRLOCKD_SOAK_REPORT, the verdict and figures go to that file's lease
// section (docs/reliability.md).
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
	labs := map[string]*partLab{}
	stats := map[string]*partStats{}
	var all partStats
	overlaps, tokens := 0, 0
	least := -1.0
	for round := 0; all.events < target && (limit == 0 || time.Since(began) < limit); round++ {
		v := testutil.EtcdVersions[round%len(testutil.EtcdVersions)]
		f := partFaults[(round/len(testutil.EtcdVersions))%len(partFaults)]
		name := testutil.EtcdVersionName(v)
		if labs[name] == nil {
			labs[name] = newPartLab(t, v)
			stats[name] = &partStats{}
		}
		r := labs[name].round(t, round, f)
		stats[name].add(r)
		all.add(r)
		t.Logf("%d/%d fault events", all.events, target)
	}
	for name, p := range labs {
		failed := t.Failed()
		l, n := p.checkWitness(t)
		if !failed && t.Failed() {
			overlaps++
		}
		tokens += n
		if l >= 0 && (least < 0 || l < least) {
			least = l
		}
		t.Logf("etcd %s: %s", name, stats[name])
	}
	t.Logf("all: %s; %d tokens, least gap between two holders' beats %.2fs", all, tokens, least)
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
	fmt.Fprintf(&b, "The last run: %s, %d fault events (target %d) in %d rounds over %v, on the project's machine (2 vCPU, shared), TTL %v, etcd election timeout 2 s.%s\n\n",
		time.Now().UTC().Format("2006-01-02"), all.events, target, all.rounds, time.Since(began).Round(time.Second), partTTL, short)
	fmt.Fprintf(&b, "**Verdict: %s.** Overlaps (two servers' beats interleaved, one clock): %d. Takeover bound (docs/lease.md): %v.\n\n", verdict, overlaps, partBound)
	b.WriteString("| etcd | rounds | fault events | worst fault to holder's death | takeover p50 | p99 | max | worst heal to a holder |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, v := range testutil.EtcdVersions {
		name := testutil.EtcdVersionName(v)
		if s := stats[name]; s != nil {
			fmt.Fprintf(&b, "| %s | %d | %d | %v | %v | %v | %v | %v |\n", name, s.rounds, s.events, quantile(s.deaths, 1),
				quantile(s.takeovers, 0.5), quantile(s.takeovers, 0.99), quantile(s.takeovers, 1), quantile(s.healToHolder, 1))
		}
	}
	fmt.Fprintf(&b, "| all | %d | %d | %v | %v | %v | %v | %v |\n\n", all.rounds, all.events, quantile(all.deaths, 1),
		quantile(all.takeovers, 0.5), quantile(all.takeovers, 0.99), quantile(all.takeovers, 1), quantile(all.healToHolder, 1))
	b.WriteString("Faults, in turn on each version: " + faultNames() + ". A fault event is one cut, one pause, or one down of a flapping link; " +
		"takeover times are from the fault to the waiter's server (rounds where the holder had to lose); Debian's etcd is 3.4.23.\n")
	if err := writeSection(path, soakSection, b.String()); err != nil {
		t.Error(err)
	}
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
