package shim

import (
	"encoding/json"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

const unit = 8192

// TestPatterns writes patterns through every entry point under the shim
// (glibc and musl builds) on XFS (atomic), ext4 and tmpfs (not atomic). The
// program checks the file against a reference copy after every write through
// the buffered descriptor, a shared mapping and O_DIRECT; the test checks
// through the counters and strace that exactly the qualifying writes (offset
// and length multiples of the unit) carried RWF_ATOMIC, each call as one
// atomic write where its range is a power of two aligned to itself, else in
// the largest aligned pieces (the program computes them).
func TestPatterns(t *testing.T) {
	out := built(t)
	fss := filesystems(t)
	scenarios := []struct {
		name string
		args func(prog string) []string
	}{
		{"random-1", func(string) []string { return []string{"random", "F", strconv.Itoa(unit), "1", "400"} }},
		{"random-2", func(string) []string { return []string{"random", "F", strconv.Itoa(unit), "2", "400"} }},
		{"fork", func(string) []string { return []string{"fork", "F", strconv.Itoa(unit)} }},
		{"dup", func(string) []string { return []string{"dup", "F", strconv.Itoa(unit)} }},
		{"exec", func(p string) []string { return []string{"exec", "F", strconv.Itoa(unit), p} }},
		{"threads", func(string) []string { return []string{"threads", "F", strconv.Itoa(unit), "8"} }},
	}
	libcs := []struct{ name, lib, prog string }{
		{"glibc", filepath.Join(out, "glibc/libuntorn.so"), filepath.Join(out, "tests/patterns")},
		{"musl", filepath.Join(out, "musl/libuntorn.so"), filepath.Join(out, "tests/patterns-musl")},
	}
	for _, fs := range fss {
		for _, lc := range libcs {
			for _, sc := range scenarios {
				t.Run(fs.name+"/"+lc.name+"/"+sc.name, func(t *testing.T) {
					stats := statsDir(t)
					file := filepath.Join(fs.dir, lc.name+"-"+sc.name)
					args := sc.args(lc.prog)
					args[1] = file
					trace := filepath.Join(t.TempDir(), "strace")
					sargs := append([]string{"-ff", "-qq", "-e", "trace=pwritev2", "-o", trace,
						"-E", "LD_PRELOAD=" + lc.lib, lc.prog}, args...)
					env := append(os.Environ(), "LC_ALL=C", "UNTORN_STATS_DIR="+stats,
						"UNTORN_UNIT="+strconv.Itoa(unit))
					text, err := runProg(env, "strace", sargs...)
					if err != nil {
						t.Fatalf("%s %v: %v\n%s", lc.prog, args, err, text)
					}
					qual, pieces, other := counts(t, text)
					st := readStats(t, stats, filepath.Base(lc.prog))
					ok, rejected, bad := straceAtomic(t, trace, unit)
					if bad != 0 {
						t.Errorf("%d RWF_ATOMIC calls wrote other than %d bytes times a power of two", bad, unit)
					}
					if rejected > st.processesMerged {
						t.Errorf("%d RWF_ATOMIC calls failed in %d processes (one buffered probe each is expected)", rejected, st.processesMerged)
					}
					if qual == 0 {
						t.Fatal("the scenario made no qualifying writes")
					}
					if fs.atomic {
						if st.AtomicWrites != qual || st.AtomicSyscalls != pieces || uint64(ok) != pieces {
							t.Errorf("qualifying calls %d pieces %d; shim: atomic_writes %d atomic_syscalls %d; strace: %d",
								qual, pieces, st.AtomicWrites, st.AtomicSyscalls, ok)
						}
					} else {
						if st.AtomicWrites != 0 || ok != 0 {
							t.Errorf("not atomic, yet atomic_writes %d strace %d", st.AtomicWrites, ok)
						}
						if got := st.Passthrough["fs_not_atomic"]; got != qual {
							t.Errorf("fs_not_atomic %d, want %d", got, qual)
						}
					}
					if st.Passthrough["unaligned"] < other {
						t.Errorf("unaligned pass-throughs %d < unaligned calls %d", st.Passthrough["unaligned"], other)
					}
					if st.WriteErrors != 0 {
						t.Errorf("write_errors %d", st.WriteErrors)
					}
				})
			}
		}
	}
}

// xfsWithMaxAtomic mounts a fresh XFS capped at max_atomic_write=maxAtomic.
func xfsWithMaxAtomic(t *testing.T, maxAtomic string) string {
	dev := testutil.LoopDevice(t, 512<<20)
	testutil.Run(t, "mkfs.xfs", "-f", "-q", dev)
	return testutil.Mount(t, dev, "xfs", "max_atomic_write="+maxAtomic)
}

// TestModes covers UNTORN_MODE, the path filter, UNTORN_UNIT defaults and
// UNTORN_HARDWARE on XFS.
func TestModes(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	capped := xfsWithMaxAtomic(t, "4k")
	for _, d := range []string{"excl", "pg_wal", "pg_wal2/pg_wal"} {
		if err := os.MkdirAll(filepath.Join(xfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(capped, "wal/pg_wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(out, "glibc/libuntorn.so")
	prog := filepath.Join(out, "tests/patterns")
	tests := []struct {
		name     string
		dir      string
		unit     int // the program's unit
		env      []string
		wantFail bool
		check    func(t *testing.T, st Stats, qual uint64)
	}{
		{"off", xfs, unit, []string{"UNTORN_MODE=off", "UNTORN_UNIT=8192"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != 0 || st.Passthrough["mode_off"] < qual {
				t.Errorf("mode off: atomic_writes %d mode_off %d", st.AtomicWrites, st.Passthrough["mode_off"])
			}
		}},
		{"default-unit-is-fs-min", xfs, 4096, nil, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != qual || st.FSUnitMin != 4096 {
				t.Errorf("atomic_writes %d want %d (fs unit min %d)", st.AtomicWrites, qual, st.FSUnitMin)
			}
		}},
		{"exclude", filepath.Join(xfs, "excl"), unit, []string{"UNTORN_UNIT=8192", "UNTORN_EXCLUDE=*/nothing/*:*/excl/*"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != 0 || st.Passthrough["excluded"] != qual {
				t.Errorf("atomic_writes %d excluded %d want %d", st.AtomicWrites, st.Passthrough["excluded"], qual)
			}
		}},
		{"default-excludes-pg_wal", filepath.Join(xfs, "pg_wal"), unit, []string{"UNTORN_UNIT=8192"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != 0 || st.Passthrough["excluded"] != qual {
				t.Errorf("atomic_writes %d excluded %d want %d", st.AtomicWrites, st.Passthrough["excluded"], qual)
			}
		}},
		{"empty-exclude-includes-pg_wal", filepath.Join(xfs, "pg_wal2/pg_wal"), unit, []string{"UNTORN_UNIT=8192", "UNTORN_EXCLUDE="}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != qual {
				t.Errorf("atomic_writes %d want %d", st.AtomicWrites, qual)
			}
		}},
		{"include-other", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_INCLUDE=*/base/*"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != 0 || st.Passthrough["excluded"] != qual {
				t.Errorf("atomic_writes %d excluded %d want %d", st.AtomicWrites, st.Passthrough["excluded"], qual)
			}
		}},
		{"include-match", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_INCLUDE=" + xfs + "/*"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != qual {
				t.Errorf("atomic_writes %d want %d", st.AtomicWrites, qual)
			}
		}},
		{"unit-out-of-range-on", capped, unit, []string{"UNTORN_UNIT=8192"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != 0 || st.Passthrough["unit_out_of_range"] != qual {
				t.Errorf("atomic_writes %d unit_out_of_range %d want %d", st.AtomicWrites, st.Passthrough["unit_out_of_range"], qual)
			}
		}},
		{"unit-out-of-range-strict-fails", capped, unit, []string{"UNTORN_UNIT=8192", "UNTORN_MODE=strict"}, true, func(t *testing.T, st Stats, _ uint64) {
			if st.StrictFailures == 0 || st.AtomicWrites != 0 {
				t.Errorf("strict: strict_failures %d atomic_writes %d", st.StrictFailures, st.AtomicWrites)
			}
		}},
		// pg_wal on a volume without the unit: excluded, so strict mode
		// leaves it alone instead of failing the WAL writes
		{"excluded-strict-on-capped-passes", filepath.Join(capped, "wal/pg_wal"), unit, []string{"UNTORN_UNIT=8192", "UNTORN_MODE=strict"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.StrictFailures != 0 || st.AtomicWrites != 0 || st.Passthrough["excluded"] != qual {
				t.Errorf("strict_failures %d atomic_writes %d excluded %d want %d", st.StrictFailures, st.AtomicWrites, st.Passthrough["excluded"], qual)
			}
		}},
		{"strict-atomic", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_MODE=strict"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.AtomicWrites != qual || st.StrictFailures != 0 || st.Mode != "strict" {
				t.Errorf("strict on atomic fs: atomic_writes %d want %d, failures %d", st.AtomicWrites, qual, st.StrictFailures)
			}
		}},
		{"unsafe-bench-refused", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_MODE=unsafe-direct-bench"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.Mode != "on" || st.AtomicWrites != qual || st.DirectUnsafe != 0 {
				t.Errorf("refused bench mode: mode %q atomic_writes %d direct_unsafe %d", st.Mode, st.AtomicWrites, st.DirectUnsafe)
			}
		}},
		{"unsafe-bench-confirmed", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_MODE=unsafe-direct-bench", "UNTORN_BENCH_CONFIRM=I-accept-torn-pages"}, false, func(t *testing.T, st Stats, qual uint64) {
			if st.Mode != "unsafe-direct-bench" || st.AtomicWrites != 0 || st.DirectUnsafe != qual {
				t.Errorf("bench mode: mode %q atomic_writes %d direct_unsafe %d want %d", st.Mode, st.AtomicWrites, st.DirectUnsafe, qual)
			}
		}},
		{"hardware-flag", xfs, unit, []string{"UNTORN_UNIT=8192", "UNTORN_HARDWARE=1"}, false, func(t *testing.T, st Stats, _ uint64) {
			if st.Hardware == nil || !*st.Hardware {
				t.Errorf("hardware = %v, want true", st.Hardware)
			}
		}},
		{"hardware-unknown", xfs, unit, []string{"UNTORN_UNIT=8192"}, false, func(t *testing.T, st Stats, _ uint64) {
			if st.Hardware != nil {
				t.Errorf("hardware = %v, want null", *st.Hardware)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stats := statsDir(t)
			env := shimEnv(lib, stats, tc.env...)
			text, err := runProg(env, prog, "random", filepath.Join(tc.dir, tc.name), strconv.Itoa(tc.unit), "3", "200")
			if tc.wantFail != (err != nil) {
				t.Fatalf("error %v, want failure %v\n%s", err, tc.wantFail, text)
			}
			var qual uint64
			if !tc.wantFail {
				qual, _, _ = counts(t, text)
			}
			tc.check(t, readStats(t, stats, "patterns"), qual)
		})
	}
}

// TestAsync covers libaio io_submit and liburing io_uring_submit on O_DIRECT
// files: the shim marks exactly the writes that can be one atomic write.
func TestAsync(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	ext4, _ := testutil.Filesystem(t, 256<<20, "ext4")
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) == "2" {
		t.Fatal("io_uring is disabled on this machine (kernel.io_uring_disabled=2): the io_uring path cannot be tested; set it to 0")
	}
	lib := filepath.Join(out, "glibc/libuntorn.so")
	prog := filepath.Join(out, "tests/asyncw")
	for _, kind := range []string{"aio", "uring"} {
		for _, fs := range []struct {
			name, dir string
			atomic    bool
		}{{"xfs", xfs, true}, {"ext4", ext4, false}} {
			t.Run(kind+"/"+fs.name, func(t *testing.T) {
				stats := statsDir(t)
				text, err := runProg(shimEnv(lib, stats, "UNTORN_UNIT=8192"), prog, kind, filepath.Join(fs.dir, kind), strconv.Itoa(unit))
				if err != nil {
					t.Fatalf("%v\n%s", err, text)
				}
				var marked, qual uint64
				for _, f := range strings.Fields(text) {
					if v, ok := strings.CutPrefix(f, "marked="); ok {
						marked, _ = strconv.ParseUint(v, 0, 64)
					}
					if v, ok := strings.CutPrefix(f, "qualifying="); ok {
						qual, _ = strconv.ParseUint(v, 0, 64)
					}
				}
				want := uint64(0)
				if fs.atomic {
					want = qual
				}
				if qual == 0 || marked != want {
					t.Fatalf("marked %#x, want %#x (qualifying %#x)\n%s", marked, want, qual, text)
				}
				st := readStats(t, stats, "asyncw")
				got, submits := st.AioAtomic, st.AioSubmits
				if kind == "uring" {
					got, submits = st.UringAtomic, st.UringSubmits
				}
				if got != uint64(bits.OnesCount64(want)) || submits == 0 {
					t.Errorf("counters: %s atomic %d submits %d, want %d", kind, got, submits, bits.OnesCount64(want))
				}
				if fs.atomic && (st.Passthrough["async_segments"] != 1 || st.Passthrough["async_unsplittable"] != 1) {
					t.Errorf("pass-throughs %v: want one async_segments and one async_unsplittable", st.Passthrough)
				}
			})
		}
	}
}

// TestNoShimBaseline makes sure the checks can fail: without the shim no
// write carries RWF_ATOMIC and asyncw reports nothing marked.
func TestNoShimBaseline(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	trace := filepath.Join(t.TempDir(), "strace")
	cmd := exec.Command("strace", "-ff", "-qq", "-e", "trace=pwritev2", "-o", trace,
		filepath.Join(out, "tests/patterns"), "random", filepath.Join(xfs, "f"), strconv.Itoa(unit), "1", "100")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if ok, _, _ := straceAtomic(t, trace, 0); ok != 0 {
		t.Errorf("%d RWF_ATOMIC writes without the shim", ok)
	}
	text, err := runProg(os.Environ(), filepath.Join(out, "tests/asyncw"), "aio", filepath.Join(xfs, "a"), strconv.Itoa(unit))
	if err != nil || !strings.Contains(text, "marked=0 ") {
		t.Errorf("asyncw without the shim: %v %q", err, text)
	}
}

// TestStatsOnDemand: touching dump-now in UNTORN_STATS_DIR makes a running
// process write its counters (why "demand") before it exits.
func TestStatsOnDemand(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	stats := statsDir(t)
	cmd := exec.Command(filepath.Join(out, "tests/patterns"), "loop", filepath.Join(xfs, "f"), strconv.Itoa(unit), "6")
	cmd.Env = shimEnv(filepath.Join(out, "glibc/libuntorn.so"), stats, "UNTORN_UNIT=8192")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	time.Sleep(1500 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(stats, "dump-now"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var demand Stats
	waitFor(t, "a counter line written on demand", 4*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(stats, "untorn-*.json"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if json.Unmarshal(b, &demand) == nil && demand.Why == "demand" {
				return true
			}
		}
		return false
	})
	if err := <-done; err != nil {
		t.Fatalf("patterns loop: %v", err)
	}
	final := readStats(t, stats, "patterns")
	if demand.AtomicWrites == 0 || final.AtomicWrites <= demand.AtomicWrites {
		t.Errorf("atomic_writes on demand %d, at exit %d: want 0 < demand < exit", demand.AtomicWrites, final.AtomicWrites)
	}
}
