package shim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// build holds the shim and test programs built once per test binary.
var build struct {
	once sync.Once
	dir  string
	err  error
	out  string
}

// built builds libuntorn.so (glibc and musl) and the C test programs with the
// package's Makefile, exactly as `make shim` does, and returns the OUT dir.
func built(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "untorn-shim-build-")
		if err != nil {
			build.err = err
			return
		}
		// Test programs are run as unprivileged database users too.
		if err := os.Chmod(dir, 0o755); err != nil {
			build.err = err
			return
		}
		build.dir = dir
		cmd := exec.Command("nice", "make", "-s", "-C", ".", "OUT="+dir, "all")
		out, err := cmd.CombinedOutput()
		build.out, build.err = string(out), err
	})
	if build.err != nil {
		t.Fatalf("building the shim: %v\n%s", build.err, build.out)
	}
	return build.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Stats is one process's counter line (see docs/shim.md).
type Stats struct {
	Pid             int               `json:"pid"`
	Exe             string            `json:"exe"`
	Why             string            `json:"why"`
	Mode            string            `json:"mode"`
	Unit            uint64            `json:"unit"`
	Hardware        *bool             `json:"hardware"`
	FSUnitMin       uint64            `json:"fs_unit_min"`
	FSUnitMax       uint64            `json:"fs_unit_max"`
	AtomicWrites    uint64            `json:"atomic_writes"`
	AtomicBytes     uint64            `json:"atomic_bytes"`
	AtomicSyscalls  uint64            `json:"atomic_syscalls"`
	SplitWrites     uint64            `json:"split_writes"`
	DirectFDAtomic  uint64            `json:"direct_fd_atomic"`
	CompanionOpens  uint64            `json:"companion_opens"`
	AioSubmits      uint64            `json:"aio_submits"`
	AioAtomic       uint64            `json:"aio_atomic"`
	UringSubmits    uint64            `json:"uring_submits"`
	UringAtomic     uint64            `json:"uring_atomic"`
	DirectUnsafe    uint64            `json:"direct_unsafe"`
	StrictFailures  uint64            `json:"strict_failures"`
	WriteErrors     uint64            `json:"write_errors"`
	BufferedAtomic  uint64            `json:"buffered_atomic"`
	FSUnitMaxOpt    uint64            `json:"fs_unit_max_opt"`
	KernelBuffered  *bool             `json:"kernel_buffered_atomic"`
	GroupAsked      uint64            `json:"group_asked"`
	GroupDone       uint64            `json:"group_done"`
	GroupKernel     uint64            `json:"group_kernel"`
	GroupRefused    map[string]uint64 `json:"group_refused"`
	Passthrough     map[string]uint64 `json:"passthrough"`
	processesMerged int
}

// readStats sums the counter lines of every process in dir, keeping only
// processes whose executable's base name is in exes (all when empty).
func readStats(t *testing.T, dir string, exes ...string) Stats {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "untorn-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := Stats{Passthrough: map[string]uint64{}, GroupRefused: map[string]uint64{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s Stats
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v: %q", f, err, b)
		}
		if len(exes) > 0 && !contains(exes, filepath.Base(s.Exe)) {
			continue
		}
		sum.processesMerged++
		sum.Mode, sum.Unit, sum.Hardware = s.Mode, s.Unit, s.Hardware
		if s.FSUnitMax > 0 {
			sum.FSUnitMin, sum.FSUnitMax, sum.FSUnitMaxOpt = s.FSUnitMin, s.FSUnitMax, s.FSUnitMaxOpt
		}
		sum.AtomicWrites += s.AtomicWrites
		sum.AtomicBytes += s.AtomicBytes
		sum.AtomicSyscalls += s.AtomicSyscalls
		sum.SplitWrites += s.SplitWrites
		sum.DirectFDAtomic += s.DirectFDAtomic
		sum.CompanionOpens += s.CompanionOpens
		sum.AioSubmits += s.AioSubmits
		sum.AioAtomic += s.AioAtomic
		sum.UringSubmits += s.UringSubmits
		sum.UringAtomic += s.UringAtomic
		sum.DirectUnsafe += s.DirectUnsafe
		sum.StrictFailures += s.StrictFailures
		sum.WriteErrors += s.WriteErrors
		sum.BufferedAtomic += s.BufferedAtomic
		sum.GroupAsked += s.GroupAsked
		sum.GroupDone += s.GroupDone
		sum.GroupKernel += s.GroupKernel
		for k, v := range s.GroupRefused {
			sum.GroupRefused[k] += v
		}
		if s.KernelBuffered != nil {
			sum.KernelBuffered = s.KernelBuffered
		}
		for k, v := range s.Passthrough {
			sum.Passthrough[k] += v
		}
	}
	if sum.processesMerged == 0 {
		t.Fatalf("no counter lines in %s (files: %v)", dir, files)
	}
	return sum
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// statsDir makes a counter directory every user can write to.
func statsDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

// shimEnv is the environment for a program run under the shim.
func shimEnv(lib, stats string, extra ...string) []string {
	env := append(os.Environ(), "LC_ALL=C", "LD_PRELOAD="+lib, "UNTORN_STATS_DIR="+stats)
	return append(env, extra...)
}

// straceAtomic counts, in the per-thread logs of `strace -ff -o prefix
// -e trace=pwritev2,...`, the system calls that carried RWF_ATOMIC (bookworm's
// strace prints it as `0x40 /* RWF_??? */`): ok completed with want bytes
// times a power of two (whole-call atomicity writes one call's aligned range
// as one atomic write; want 0: any positive count), rejected failed (the
// shim's one probe per process for buffered RWF_ATOMIC fails with
// EOPNOTSUPP), other wrote another byte count.
var rwfAtomic = regexp.MustCompile(`(RWF_ATOMIC|0x40 /\* RWF_\?\?\? \*/)\) += (-?\d+)`)

func straceAtomic(t *testing.T, prefix string, want int) (ok, rejected, other int) {
	t.Helper()
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no strace logs %s.*: %v", prefix, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := rwfAtomic.FindStringSubmatch(line)
			switch {
			case m == nil:
			case strings.HasPrefix(m[2], "-"):
				rejected++
			case want == 0 || powerOfTwoTimes(m[2], want):
				ok++
			default:
				other++
			}
		}
	}
	return ok, rejected, other
}

// powerOfTwoTimes: the decimal count n is want times a power of two.
func powerOfTwoTimes(n string, want int) bool {
	v, err := strconv.Atoi(n)
	if err != nil || v < want || v%want != 0 {
		return false
	}
	q := v / want
	return q&(q-1) == 0
}

// counts parses the "qualifying=<n> pieces=<n> other=<n>" lines a test
// program prints (one per process) and sums them.
func counts(t *testing.T, out string) (qual, pieces, other uint64) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	seen := false
	for sc.Scan() {
		var q, p, o uint64
		if _, err := fmt.Sscanf(sc.Text(), "qualifying=%d pieces=%d other=%d", &q, &p, &o); err == nil {
			qual, pieces, other, seen = qual+q, pieces+p, other+o, true
		}
	}
	if !seen {
		t.Fatalf("no counts in the program's output:\n%s", out)
	}
	return
}

// runProg runs a test program with env and returns its combined output.
func runProg(env []string, prog string, args ...string) (string, error) {
	cmd := exec.Command(prog, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// atomicFS is a mounted filesystem for the pattern tests.
type atomicFS struct {
	name   string
	dir    string
	atomic bool // statx reports atomic writes for the configured unit
}

// filesystems mounts XFS (software atomic writes on a loop device), ext4 and
// tmpfs (no atomic writes), all cleaned up with the test.
func filesystems(t *testing.T) []atomicFS {
	t.Helper()
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	ext4, _ := testutil.Filesystem(t, 256<<20, "ext4")
	return []atomicFS{
		{name: "xfs", dir: xfs, atomic: true},
		{name: "ext4", dir: ext4, atomic: false},
		{name: "tmpfs", dir: testutil.Tmpfs(t), atomic: false},
	}
}
