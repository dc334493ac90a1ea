package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var ackLine = regexp.MustCompile(`^bplain-ack writer=(\d+) slot=(\d+) seq=(\d+)$`)

// TestTearwSlotsAreReadByTearCheck builds the C writer of the crash model
// (hack/vm/tearw), lets it rewrite slots of a file with buffered writes,
// stops it between system calls (SIGSTOP takes effect on the return to user
// space, so no write is half done) and checks that tear-check reads every
// slot it wrote as whole, with at least the sequence number it acknowledged:
// the two programs agree on the record format and the acknowledgement
// lines the crash test compares.
func TestTearwSlotsAreReadByTearCheck(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("a C compiler is needed to build hack/vm/tearw: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tearw")
	if out, err := exec.Command(cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin,
		"../tearw/tearw.c", "-pthread").CombinedOutput(); err != nil {
		t.Fatalf("building tearw: %v\n%s", err, out)
	}
	const slot, slots, first = 16384, 32, 8
	file := filepath.Join(dir, "slots")
	if err := os.WriteFile(file, make([]byte, (first+slots)*slot), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, file, strconv.Itoa(slot), strconv.Itoa(slots), strconv.Itoa(first), "4", "plain", "bplain")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Acknowledgements until every writer has reported, then stop it.
	acked := map[int]uint64{} // slot -> acknowledged sequence
	writers := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	deadline := time.Now().Add(30 * time.Second)
	for len(writers) < 4 && sc.Scan() && time.Now().Before(deadline) {
		m := ackLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("unexpected output line %q", sc.Text())
		}
		writers[m[1]] = true
		s, _ := strconv.Atoi(m[2])
		q, _ := strconv.ParseUint(m[3], 10, 64)
		if s < first || s >= first+slots || (s-first)%4 != mustAtoi(t, m[1]) {
			t.Fatalf("writer %s acknowledged slot %d, not one of its own", m[1], s)
		}
		acked[s] = max(acked[s], q)
	}
	if len(writers) < 4 {
		t.Fatalf("only writers %v acknowledged a write", writers)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	out := captureStdout(t, func() error {
		return cmdTearCheck(file, []string{"--slot", strconv.Itoa(slot), "--slots", strconv.Itoa(slots),
			"--first", strconv.Itoa(first), "--prefix", "bplain"})
	})
	if !strings.Contains(out, " torn=0 ") || strings.Contains(out, "bplain-check slots=32 empty=0 whole=0") {
		t.Fatalf("tear-check of tearw's slots:\n%s", out)
	}
	have := map[int]uint64{}
	for _, l := range strings.Split(out, "\n") {
		var s int
		var q uint64
		if n, _ := fmt.Sscanf(l, "bplain-slot slot=%d seq=%d", &s, &q); n == 2 {
			have[s] = q
		}
	}
	for s, q := range acked {
		if have[s] < q {
			t.Errorf("slot %d: acknowledged seq %d, tear-check read %d", s, q, have[s])
		}
	}
	// Nothing outside the slots was written.
	outside := captureStdout(t, func() error {
		return cmdTearCheck(file, []string{"--slot", strconv.Itoa(slot), "--slots", strconv.Itoa(first), "--prefix", "x"})
	})
	if !strings.Contains(outside, "x-check slots=8 empty=8 whole=0 torn=0") {
		t.Errorf("slots before FIRST were written:\n%s", outside)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
