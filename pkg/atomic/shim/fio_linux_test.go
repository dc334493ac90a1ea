package shim

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// TestFio runs a writer nobody here wrote under the shim on XFS: fio random
// writes with crc32c verification (every block read back and checked, fatal
// on a mismatch) through psync (pwrite), pvsync2 (pwritev2, 16 KiB blocks:
// one atomic write per 16 KiB call with an 8 KiB unit) and libaio on O_DIRECT,
// and the counters show every write made atomic.
func TestFio(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("fio"); err != nil {
		t.Fatal("fio not installed (hack/deps/shim.txt lists it)")
	}
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	lib := filepath.Join(out, "glibc/libuntorn.so")
	const size = 8 << 20
	for _, tc := range []struct {
		engine string
		bs     int
		args   []string
	}{
		{"psync", 8192, nil},
		{"pvsync2", 16384, nil},
		{"libaio", 8192, []string{"--direct=1", "--iodepth=8"}},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			stats := statsDir(t)
			// --thread: jobs are threads of the process that writes the
			// counter line at exit (forked jobs end with _exit).
			args := append([]string{"--thread", "--name=" + tc.engine, "--filename=" + filepath.Join(xfs, tc.engine),
				"--ioengine=" + tc.engine, "--rw=randwrite", "--bs=" + strconv.Itoa(tc.bs),
				"--size=" + strconv.Itoa(size), "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
				"--output-format=terse"}, tc.args...)
			text, err := runProg(shimEnv(lib, stats, "UNTORN_UNIT=8192"), "fio", args...)
			if err != nil {
				t.Fatalf("fio: %v\n%s", err, text)
			}
			st := readStats(t, stats, "fio")
			writes := uint64(size / tc.bs)
			got := st.AtomicSyscalls
			if tc.engine == "libaio" {
				got = st.AioAtomic
			}
			if st.AtomicWrites != writes || got != writes || st.WriteErrors != 0 {
				t.Errorf("%d writes of %d bytes: atomic_writes %d, atomic pwritev2/iocbs %d, write_errors %d",
					writes, tc.bs, st.AtomicWrites, got, st.WriteErrors)
			}
		})
	}
}
