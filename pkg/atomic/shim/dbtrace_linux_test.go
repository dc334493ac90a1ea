package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var (
	straceCall   = regexp.MustCompile(`^(pwrite64|pwritev2|pwritev|write|writev)\((\d+)<([^>]*)>, (.*)\) += (-?\d+)`)
	straceOffset = regexp.MustCompile(`, (\d+)$`)            // pwrite64, pwritev: ..., offset
	straceOffFl  = regexp.MustCompile(`, (\d+), ([^,\]]+)$`) // pwritev2: ..., offset, flags
	straceIovLen = regexp.MustCompile(`iov_len=(\d+)`)       // one per iovec
	straceFlagAt = regexp.MustCompile(`RWF_ATOMIC|0x40 /\* RWF_\?\?\? \*/`)
	straceEnter  = regexp.MustCompile(`^io_uring_enter\(`) // raw submissions
	straceSubmit = regexp.MustCompile(`^io_submit\(`)      // libaio submissions
	tracePidFile = regexp.MustCompile(`\.(\d+)$`)          // strace -ff -o prefix: prefix.PID
)

// writeTrace is what strace -ff -y saw of the writes to a class of files:
// the page totals, the same per process id, the call shapes (system call,
// iovec count, bytes, flag) with their counts, and the raw io_uring_enter
// and io_submit calls (to any file: strace cannot look inside a ring).
type writeTrace struct {
	pageWrites
	byPid       map[int]*pageWrites
	shapes      map[string]int
	uringEnters int
	aioSubmits  int
}

func traceWrites(t *testing.T, prefix string, pathRE *regexp.Regexp, size int) writeTrace {
	t.Helper()
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no strace logs %s.*", prefix)
	}
	wt := writeTrace{byPid: map[int]*pageWrites{}, shapes: map[string]int{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid := 0
		if m := tracePidFile.FindStringSubmatch(f); m != nil {
			pid, _ = strconv.Atoi(m[1])
		}
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case straceEnter.MatchString(line):
				wt.uringEnters++
				continue
			case straceSubmit.MatchString(line):
				wt.aioSubmits++
				continue
			}
			m := straceCall.FindStringSubmatch(line)
			if m == nil || !pathRE.MatchString(m[3]) || strings.HasPrefix(m[5], "-") {
				continue
			}
			res, _ := strconv.Atoi(m[5])
			atomic, off := false, int64(-1)
			switch m[1] {
			case "pwrite64", "pwritev":
				if a := straceOffset.FindStringSubmatch(m[4]); a != nil {
					off, _ = strconv.ParseInt(a[1], 10, 64)
				}
			case "pwritev2":
				if a := straceOffFl.FindStringSubmatch(m[4]); a != nil {
					off, _ = strconv.ParseInt(a[1], 10, 64)
					atomic = straceFlagAt.MatchString(a[2])
				}
			}
			iovs := len(straceIovLen.FindAllString(m[4], -1))
			if iovs == 0 {
				iovs = 1
			}
			shape := fmt.Sprintf("%s %dx iov %d B", m[1], iovs, res)
			if atomic {
				shape += " RWF_ATOMIC"
			}
			wt.shapes[shape]++
			p := wt.byPid[pid]
			if p == nil {
				p = &pageWrites{}
				wt.byPid[pid] = p
			}
			switch {
			case off < 0 || res == 0 || off%int64(size) != 0 || res%size != 0:
				wt.otherSizes++
				p.otherSizes++
			case atomic:
				wt.atomic += res / size
				p.atomic += res / size
			default:
				wt.plain += res / size
				p.plain += res / size
			}
		}
	}
	return wt
}

// shapeSummary lists the call shapes, most frequent first.
func (wt writeTrace) shapeSummary() string {
	keys := make([]string, 0, len(wt.shapes))
	for k := range wt.shapes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if wt.shapes[keys[i]] != wt.shapes[keys[j]] {
			return wt.shapes[keys[i]] > wt.shapes[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", wt.shapes[k], k)
	}
	return strings.Join(parts, "; ")
}

// writers names the processes that wrote pages, with their atomic and plain
// page counts: titles maps a pid to its command line (the process title),
// unknown pids (processes that exited before the snapshot) count as
// "exited process".
func (wt writeTrace) writers(titles map[int]string) string {
	sum := map[string]*pageWrites{}
	for pid, pw := range wt.byPid {
		if pw.atomic+pw.plain == 0 {
			continue
		}
		name := processKind(titles[pid])
		s := sum[name]
		if s == nil {
			s = &pageWrites{}
			sum[name] = s
		}
		s.atomic += pw.atomic
		s.plain += pw.plain
	}
	keys := make([]string, 0, len(sum))
	for k := range sum {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d/%d", k, sum[k].atomic, sum[k].atomic+sum[k].plain)
	}
	return strings.Join(parts, ", ")
}

// processKind turns a process title into its kind: "postgres: checkpointer"
// stays, a backend's "postgres: postgres postgres [local] idle" becomes
// "backend", "postgres: io worker 2" becomes "io worker".
func processKind(title string) string {
	switch {
	case title == "":
		return "exited process"
	case strings.Contains(title, "[local]") || strings.Contains(title, "client backend"):
		return "backend"
	case strings.HasPrefix(title, "postgres: "):
		k := strings.TrimPrefix(title, "postgres: ")
		return strings.TrimRight(strings.TrimSpace(k), "0123456789 ")
	}
	return filepath.Base(strings.Fields(title)[0])
}
