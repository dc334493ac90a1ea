package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// stracePwritev2 is one pwritev2 line of `strace -f -s 0 -e trace=pwritev2`.
var stracePwritev2 = regexp.MustCompile(`pwritev2\((\d+), \[.*\], (\d+), (-?\d+), ([^)]*)\) += (-?\d+)`)

// atomicCall is a pwritev2 that carried RWF_ATOMIC (bookworm's strace prints
// the flag as 0x40).
type atomicCall struct {
	off, res int64
	flags    string
}

func straceAtomicCalls(t *testing.T, file string) (ok, failed []atomicCall) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		m := stracePwritev2.FindStringSubmatch(line)
		if m == nil || !(strings.Contains(m[4], "RWF_ATOMIC") || strings.Contains(m[4], "0x40")) {
			continue
		}
		off, _ := strconv.ParseInt(m[3], 10, 64)
		res, _ := strconv.ParseInt(m[5], 10, 64)
		c := atomicCall{off: off, res: res, flags: m[4]}
		if res < 0 {
			failed = append(failed, c)
		} else {
			ok = append(ok, c)
		}
	}
	return ok, failed
}

// TestGroups asks for buffered atomic write groups in every shape (1, 2, 4
// and 16 buffers; every power of two from the filesystem's unit min to its
// unit max; at an offset, at the file position, with RWF_DSYNC, over dirty
// page cache) and for invalid ones. The program checks results, errno and
// the file through buffered, mmap and O_DIRECT reads after every call; the
// test checks with strace that each accepted group reached the kernel as
// exactly one pwritev2 with RWF_ATOMIC of its whole length at its offset,
// that refused groups issued none, and the counters.
func TestGroups(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	ext4, _ := testutil.Filesystem(t, 256<<20, "ext4")
	lib := filepath.Join(out, "glibc/libuntorn.so")
	prog := filepath.Join(out, "tests/groups")
	for _, fs := range []struct {
		name, dir string
		atomic    bool
	}{{"xfs", xfs, true}, {"ext4", ext4, false}} {
		t.Run(fs.name, func(t *testing.T) {
			stats := statsDir(t)
			trace := filepath.Join(t.TempDir(), "strace")
			mode := "none"
			if fs.atomic {
				mode = "atomic"
			}
			text, err := runProg(append(os.Environ(), "LC_ALL=C", "UNTORN_STATS_DIR="+stats), "strace",
				"-f", "-qq", "-s", "0", "-e", "trace=pwritev2", "-o", trace, "-E", "LD_PRELOAD="+lib,
				prog, filepath.Join(fs.dir, "g"), mode)
			if err != nil {
				t.Fatalf("groups: %v\n%s", err, text)
			}
			var accepted, refused int
			if _, err := fmt.Sscanf(text[strings.LastIndex(text, "accepted="):], "accepted=%d refused=%d", &accepted, &refused); err != nil {
				t.Fatalf("no summary in:\n%s", text)
			}
			want := map[atomicCall]int{}
			for _, line := range strings.Split(text, "\n") {
				var off, n int64
				if _, err := fmt.Sscanf(line, "group off=%d len=%d", &off, &n); err == nil {
					want[atomicCall{off: off, res: n}]++
				}
			}
			ok, failed := straceAtomicCalls(t, trace)
			got := map[atomicCall]int{}
			for _, c := range ok {
				got[atomicCall{off: c.off, res: c.res}]++
			}
			st := readStats(t, stats, "groups")
			if !fs.atomic {
				if len(ok)+len(failed) != 0 || st.GroupRefused["not_atomic"] != uint64(refused) || accepted != 0 {
					t.Errorf("no atomic writes: %d RWF_ATOMIC calls reached the kernel, refused not_atomic %d of %d",
						len(ok)+len(failed), st.GroupRefused["not_atomic"], refused)
				}
				return
			}
			if accepted < 4*9 || len(want) == 0 {
				t.Fatalf("only %d groups accepted", accepted)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("RWF_ATOMIC pwritev2 calls that reached the kernel (offset, bytes):\n got %v\nwant %v", got, want)
			}
			// At most the one probe per process for kernel buffered
			// RWF_ATOMIC, refused with EOPNOTSUPP (nothing written).
			if len(failed) > 1 {
				t.Errorf("%d RWF_ATOMIC calls failed in the kernel: %v", len(failed), failed)
			}
			wantRefused := map[string]uint64{"length": 4, "alignment": 2, "segments": 1}
			for k, v := range st.GroupRefused {
				if v != wantRefused[k] {
					t.Errorf("group_refused[%s] = %d, want %d", k, v, wantRefused[k])
				}
			}
			if st.GroupAsked != uint64(accepted+refused) || st.GroupDone != uint64(accepted) || st.GroupKernel != 0 {
				t.Errorf("group_asked %d group_done %d group_kernel %d; program: %d accepted, %d refused",
					st.GroupAsked, st.GroupDone, st.GroupKernel, accepted, refused)
			}
			if st.KernelBuffered == nil || *st.KernelBuffered {
				t.Errorf("kernel_buffered_atomic = %v, want false (mainline refuses buffered RWF_ATOMIC)", st.KernelBuffered)
			}
		})
	}
}

// TestGroupExample builds docs/examples/atomic-group.c (the Makefile does)
// and runs it: under the shim on XFS it writes its 16 KiB group from four
// buffers; without the shim it finds no groups and says so.
func TestGroupExample(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	prog := filepath.Join(out, "tests/atomic-group")
	stats := statsDir(t)
	text, err := runProg(shimEnv(filepath.Join(out, "glibc/libuntorn.so"), stats), prog, filepath.Join(xfs, "rec"))
	if err != nil || !strings.Contains(text, "wrote one 16384-byte atomic group from 4 buffers") {
		t.Fatalf("example under the shim: %v\n%s", err, text)
	}
	if st := readStats(t, stats, "atomic-group"); st.GroupDone != 1 {
		t.Errorf("group_done %d, want 1", st.GroupDone)
	}
	text, err = runProg(os.Environ(), prog, filepath.Join(xfs, "rec2"))
	if err != nil || !strings.Contains(text, "no buffered atomic write groups") {
		t.Errorf("example without the shim: %v\n%s", err, text)
	}
}
