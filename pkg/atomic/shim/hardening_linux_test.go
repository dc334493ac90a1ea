package shim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

// runBounded runs a test program that must finish; a program still running
// after limit is a hang (a deadlock in the library), killed and reported.
func runBounded(t *testing.T, limit time.Duration, env []string, prog string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung (killed after %v): a deadlock\n%s", filepath.Base(prog), args, limit, out)
	}
	return string(out), err
}

// TestHardening covers the library inside a threaded, signal-handling
// process: close_range racing page writes, a signal handler writing while
// the same thread is inside the library, cancellation and the next preload
// library on the descriptor calls.
func TestHardening(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	lib := filepath.Join(out, "glibc/libuntorn.so")
	prog := filepath.Join(out, "tests/hardening")

	// A companion closed by close_range while a writer uses it: the library
	// must drop it before the number is closed (and can be handed to another
	// thread's file), so no page write fails or lands in another file.
	t.Run("close_range-race", func(t *testing.T) {
		stats := statsDir(t)
		text, err := runBounded(t, 3*time.Minute, shimEnv(lib, stats, "UNTORN_UNIT=8192"), prog,
			"closerange", filepath.Join(xfs, "cr"), filepath.Join(xfs, "cr-other"), "5000")
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		st := readStats(t, stats, "hardening")
		if st.AtomicWrites == 0 || st.CompanionOpens < 2 || st.WriteErrors != 0 {
			t.Errorf("atomic_writes %d companion_opens %d write_errors %d: want atomic page writes with companions reopened after close_range",
				st.AtomicWrites, st.CompanionOpens, st.WriteErrors)
		}
		t.Log(strings.TrimSpace(text), "companion_opens", st.CompanionOpens)
	})

	// A timer signal every millisecond whose handler writes a page while the main
	// thread opens, classifies, writes and closes: no deadlock, both files
	// right; writes that interrupted the library pass through (nested).
	t.Run("signal-during-classification", func(t *testing.T) {
		stats := statsDir(t)
		text, err := runBounded(t, 3*time.Minute, shimEnv(lib, stats, "UNTORN_UNIT=8192"), prog,
			"signal", filepath.Join(xfs, "sig-main"), filepath.Join(xfs, "sig-handler"), "3000")
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		st := readStats(t, stats, "hardening")
		if st.AtomicWrites < 3000 || st.WriteErrors != 0 {
			t.Errorf("atomic_writes %d write_errors %d", st.AtomicWrites, st.WriteErrors)
		}
		t.Log(strings.TrimSpace(text), "nested", st.Passthrough["nested"])
	})

	t.Run("open-is-a-cancellation-point", func(t *testing.T) {
		text, err := runBounded(t, time.Minute, shimEnv(lib, statsDir(t)), prog, "cancel", filepath.Join(t.TempDir(), "fifo"))
		if err != nil || !strings.Contains(text, "cancelled") {
			t.Fatalf("%v\n%s", err, text)
		}
	})

	t.Run("next-preload-library", func(t *testing.T) {
		env := shimEnv(lib+":"+filepath.Join(out, "tests/libnextopen.so"), statsDir(t))
		text, err := runBounded(t, time.Minute, env, prog, "nextopen", filepath.Join(xfs, "next"))
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
	})
}

// TestUringLayout: a liburing whose version is not the ring layout the
// library copies keeps its rings untouched (counted uring_layout) and strict
// mode fails the submission; the same ring from a liburing 2 is marked.
func TestUringLayout(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	lib := filepath.Join(out, "glibc/libuntorn.so") + ":" + filepath.Join(out, "tests/libfakeuring.so")
	prog := filepath.Join(out, "tests/hardening")
	for _, tc := range []struct {
		name       string
		env        []string
		wantMarked bool
		wantRet    string
		reason     string
	}{
		{"liburing-3", nil, false, "ret=1", "uring_layout"},
		{"liburing-3-strict", []string{"UNTORN_MODE=strict"}, false, "ret=-5", "uring_layout"},
		{"liburing-2", []string{"FAKE_URING_MAJOR=2"}, true, "ret=1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats := statsDir(t)
			env := shimEnv(lib, stats, append([]string{"UNTORN_UNIT=8192"}, tc.env...)...)
			text, err := runBounded(t, time.Minute, env, prog, "uring", filepath.Join(xfs, tc.name))
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			marked := strings.Contains(text, "marked=1")
			if marked != tc.wantMarked || !strings.Contains(text, tc.wantRet) {
				t.Errorf("got %q, want marked %v and %s", strings.TrimSpace(text), tc.wantMarked, tc.wantRet)
			}
			st := readStats(t, stats, "hardening")
			if tc.reason != "" && st.Passthrough[tc.reason] != 1 {
				t.Errorf("passthrough %v: want one %s", st.Passthrough, tc.reason)
			}
			if strict := strings.HasSuffix(tc.name, "strict"); strict != (st.StrictFailures == 1) {
				t.Errorf("strict_failures %d", st.StrictFailures)
			}
		})
	}
}

// TestAsyncStrict: strict mode on the libaio and io_uring paths fails a
// submission holding an aligned write the library cannot make atomic (a
// two-segment vector, a 3-unit write) instead of letting it go out torn.
func TestAsyncStrict(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	lib := filepath.Join(out, "glibc/libuntorn.so")
	for _, kind := range []string{"aio", "uring"} {
		t.Run(kind, func(t *testing.T) {
			stats := statsDir(t)
			text, err := runProg(shimEnv(lib, stats, "UNTORN_UNIT=8192", "UNTORN_MODE=strict"),
				filepath.Join(out, "tests/asyncw"), kind, filepath.Join(xfs, kind), "8192")
			if err == nil {
				t.Fatalf("asyncw in strict mode succeeded:\n%s", text)
			}
			st := readStats(t, stats, "asyncw")
			if st.StrictFailures == 0 {
				t.Errorf("strict_failures 0; output:\n%s", text)
			}
			if _, err := os.Stat(filepath.Join(xfs, kind)); err != nil {
				t.Fatal(err)
			}
		})
	}
}
