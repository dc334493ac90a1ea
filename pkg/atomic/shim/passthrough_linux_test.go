package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// procLine is the part of a process's counter line this file reads besides
// Stats: the process title and the time spent in the writethrough.
type procLine struct {
	Title          string `json:"title"`
	WritethroughNS uint64 `json:"writethrough_ns"`
}

// TestPassthroughCounts: every write the library leaves alone, through every
// entry point, from the main thread and from new threads (whose first write
// takes the slow path), lands in exactly one pass-through counter, in modes
// on and off; the aligned page writes are atomic, and the counter line names
// the process by its title and says how long its writethrough took.
func TestPassthroughCounts(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	const n, threads = 300, 3
	per := uint64(threads + 1)
	for _, mode := range []string{"on", "off"} {
		t.Run(mode, func(t *testing.T) {
			stats := statsDir(t)
			env := shimEnv(filepath.Join(out, "glibc/libuntorn.so"), stats, "UNTORN_UNIT=8192", "UNTORN_MODE="+mode)
			if o, err := runProg(env, filepath.Join(out, "tests/passcount"), filepath.Join(xfs, "f-"+mode),
				strconv.Itoa(n), strconv.Itoa(threads)); err != nil {
				t.Fatalf("passcount: %v\n%s", err, o)
			}
			s := readStats(t, stats, "passcount")
			var sum uint64
			for _, v := range s.Passthrough {
				sum += v
			}
			if mode == "off" {
				if want := per * (7*n + 1); s.Passthrough["mode_off"] != want || sum != want || s.AtomicWrites != 0 {
					t.Errorf("mode off: mode_off %d of %d pass-through counts, atomic %d; want all %d", s.Passthrough["mode_off"], sum, s.AtomicWrites, want)
				}
				return
			}
			if got, want := s.Passthrough["unaligned"], per*5*n; got != want {
				t.Errorf("unaligned %d, want %d (%v)", got, want, s.Passthrough)
			}
			if got, want := s.Passthrough["not_regular"], per*2*n; got != want {
				t.Errorf("not_regular %d, want %d (%v)", got, want, s.Passthrough)
			}
			if want := per * 7 * n; sum != want {
				t.Errorf("%d pass-through counts in all, want %d (%v)", sum, want, s.Passthrough)
			}
			if s.AtomicWrites != per {
				t.Errorf("atomic_writes %d, want %d", s.AtomicWrites, per)
			}
			files, _ := filepath.Glob(filepath.Join(stats, "untorn-*.json"))
			var line procLine
			for _, f := range files {
				b, _ := os.ReadFile(f)
				var p procLine
				if json.Unmarshal(b, &p) == nil && strings.Contains(p.Title, "passcount") {
					line = p
				}
			}
			if !strings.Contains(line.Title, "tests/passcount "+filepath.Join(xfs, "f-on")) {
				t.Errorf("no counter line titled with the program's command line: %+v", line)
			}
			if line.WritethroughNS == 0 {
				t.Errorf("writethrough_ns 0 after %d atomic writes", s.AtomicWrites)
			}
		})
	}
}
