package atomic

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// usedBytes is the filesystem's used space as statfs reports it (what df
// shows and what runs out): copy-on-write reservations count.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Blocks-fs.Bfree) * fs.Bsize
}

// cowGrowth preallocates a span-byte file at name and returns how much the
// used space of its filesystem grows over n random page-sized RWF_ATOMIC
// writes into it.
func cowGrowth(t *testing.T, name string, page, span int64, n int) int64 {
	t.Helper()
	f, err := OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.f.Fd()), 0, 0, span); err != nil {
		t.Fatal(err)
	}
	before := usedBytes(t, filepath.Dir(name))
	buf := alignedBuffer(int(page), 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
		buf[0] = byte(i)
		if _, err := f.WriteAtomicAt(buf, rng.Int64N(span/page)*page); err != nil {
			t.Fatal(err)
		}
	}
	return usedBytes(t, filepath.Dir(name)) - before
}

// TestXFSCoWReservations proves that the planner's XFS format keeps the
// copy-on-write fork from holding space beyond the writes: 32 MiB of
// random 8 KiB atomic writes (PostgreSQL pages on the default 16Ki class)
// into a 64 MiB file grow the used space by almost nothing on the planned
// volume, by tens of MiB on a volume formatted without the hint (the
// earlier planner's options), and by almost nothing again in new files
// once SetCoWExtSize has given that volume's root the hint. Both volumes
// still verify.
func TestXFSCoWReservations(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		page   = 8 << 10
		span   = 64 * mib
		writes = 4096
		small  = 4 * mib  // the most the hint may leave
		large  = 16 * mib // the least the default hint leaves here
	)
	dev := testutil.LoopDevice(t, gib)
	limits, err := Sysfs{}.Probe(dev)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanFormat(limits, PlanRequest{FSType: FSXFS, Unit: 16 << 10, Policy: PolicyRequire}, dev)
	if err != nil {
		t.Fatal(err)
	}
	planned := formatPlanned(t, p)
	if size, set, err := CoWExtSize(planned); err != nil || !set || size != p.CoWExtSize {
		t.Fatalf("planned root hint = %d, %v, %v; want %d", size, set, err, p.CoWExtSize)
	}
	if g := cowGrowth(t, filepath.Join(planned, "data"), page, span, writes); g > small {
		t.Errorf("planned volume: used space grew by %d MiB over %d MiB of random atomic writes, want at most %d MiB",
			g/mib, writes*page/mib, small/mib)
	} else {
		t.Logf("planned volume: used space grew by %d KiB", g>>10)
	}

	earlier, _ := testutil.Filesystem(t, gib, "xfs", "-b", "size=4096", "-m", "reflink=1")
	if _, set, err := CoWExtSize(earlier); err != nil || set {
		t.Fatalf("earlier volume root hint set = %v, %v; want unset", set, err)
	}
	if g := cowGrowth(t, filepath.Join(earlier, "data"), page, span, writes); g < large {
		t.Errorf("volume without the hint: used space grew by %d MiB, want at least %d MiB (the test no longer shows the reservations)",
			g/mib, large/mib)
	} else {
		t.Logf("volume without the hint: used space grew by %d MiB", g/mib)
	}

	// Staging a volume formatted earlier: the root gets the hint, once.
	if changed, err := SetCoWExtSize(earlier, p.CoWExtSize); err != nil || !changed {
		t.Fatalf("SetCoWExtSize = %v, %v; want changed", changed, err)
	}
	if changed, err := SetCoWExtSize(earlier, p.CoWExtSize); err != nil || changed {
		t.Fatalf("second SetCoWExtSize = %v, %v; want unchanged", changed, err)
	}
	if size, set, err := CoWExtSize(earlier); err != nil || !set || size != p.CoWExtSize {
		t.Fatalf("earlier root hint after SetCoWExtSize = %d, %v, %v", size, set, err)
	}
	// New files inherit it, also through a new directory.
	sub := filepath.Join(earlier, "base")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if g := cowGrowth(t, filepath.Join(sub, "data"), page, span, writes); g > small {
		t.Errorf("new file on the earlier volume after SetCoWExtSize: used space grew by %d MiB, want at most %d MiB",
			g/mib, small/mib)
	}
	for _, dir := range []string{planned, earlier} {
		if v, err := Verify(dir, 16<<10); err != nil || !v.Atomic {
			t.Errorf("Verify(%s) = %+v, %v", dir, v, err)
		}
	}

	// Only the root of an XFS mount, only a valid size.
	if _, err := SetCoWExtSize(sub, p.CoWExtSize); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SetCoWExtSize(subdirectory) = %v, want ErrUnsupported", err)
	}
	if _, err := SetCoWExtSize(testutil.Tmpfs(t), p.CoWExtSize); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SetCoWExtSize(tmpfs) = %v, want ErrUnsupported", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(earlier, link); err != nil {
		t.Fatal(err)
	}
	if _, err := SetCoWExtSize(link, p.CoWExtSize); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("SetCoWExtSize(symlink) = %v, want ENOTDIR (not followed)", err)
	}
	for _, size := range []uint64{0, 3000, 2048, 2 * maxCoWExtSize} {
		if _, err := SetCoWExtSize(planned, size); !errors.Is(err, ErrNotPowerOfTwo) {
			t.Errorf("SetCoWExtSize(%d) = %v, want ErrNotPowerOfTwo", size, err)
		}
	}
}
