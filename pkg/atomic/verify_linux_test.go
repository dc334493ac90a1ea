package atomic

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

const gib = 1 << 30

// formatPlanned formats dev with the plan's mkfs command and mounts it with
// the plan's mount options.
func formatPlanned(t *testing.T, p Plan) string {
	t.Helper()
	dev := p.MkfsArgs[len(p.MkfsArgs)-1]
	testutil.Run(t, p.MkfsProgram, append([]string{"-q"}, p.MkfsArgs...)...)
	return testutil.Mount(t, dev, string(p.FSType), p.MountOptions...)
}

// entries lists dir without lost+found.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != "lost+found" {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestVerifyXFSOnLoop(t *testing.T) {
	testutil.RequireRoot(t)
	dev := testutil.LoopDevice(t, gib)
	limits, err := Sysfs{}.Probe(dev) // the real /dev node and /sys
	if err != nil {
		t.Fatal(err)
	}
	if limits.HardwareAtomic() || limits.Partition || limits.Name != filepath.Base(dev) {
		t.Fatalf("loop device limits: %+v", limits)
	}
	p, err := PlanFormat(limits, PlanRequest{FSType: FSXFS, Unit: 16 << 10, Policy: PolicyRequire}, dev)
	if err != nil {
		t.Fatal(err)
	}
	dir := formatPlanned(t, p)

	v, err := Verify(dir, 16<<10)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("xfs verification: %+v", v)
	switch {
	case !v.Atomic || v.Cause != nil || v.Reason != "":
		t.Errorf("xfs on loop not atomic: %+v", v)
	case v.UnitMax < 16<<10 || v.UnitMin == 0 || v.UnitMin > 16<<10:
		t.Errorf("unit range %d..%d does not hold 16 KiB", v.UnitMin, v.UnitMax)
	case v.Unit != 16<<10 || v.FSType != "xfs" || v.Device != dev:
		t.Errorf("unit %d fs %q device %q", v.Unit, v.FSType, v.Device)
	case v.Hardware:
		t.Errorf("loop device reported as hardware atomic")
	case uint64(v.UnitMax) < p.AtomicUnitMax:
		t.Errorf("statx max %d below the planned %d", v.UnitMax, p.AtomicUnitMax)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("Verify left files behind: %v", names)
	}

	// The default unit is the filesystem's unit min.
	if v, err := Verify(dir, 0); err != nil || !v.Atomic || v.Unit != uint64(v.UnitMin) {
		t.Errorf("Verify(dir, 0) = %+v, %v", v, err)
	}
	// Units outside the range are "not atomic", with a sentinel cause.
	if v, err := Verify(dir, uint64(v.UnitMax)*2); err != nil || v.Atomic || !errors.Is(v.Cause, ErrUnitTooLarge) {
		t.Errorf("Verify above unit max = %+v, %v", v, err)
	}
	if v, err := Verify(dir, 1024); err != nil || v.Atomic || !errors.Is(v.Cause, ErrUnitTooSmall) {
		t.Errorf("Verify below unit min = %+v, %v", v, err)
	}
	if _, err := Verify(dir, 3000); !errors.Is(err, ErrNotPowerOfTwo) {
		t.Errorf("Verify(3000) error = %v, want ErrNotPowerOfTwo", err)
	}
	if _, err := Verify(filepath.Join(dir, "missing"), 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Verify(missing dir) error = %v, want not exist", err)
	}

	testAtomicFile(t, dir)
}

// testAtomicFile writes through the Go API on an atomic filesystem.
func testAtomicFile(t *testing.T, dir string) {
	name := filepath.Join(dir, "data")
	f, err := OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	defer f.Close()
	l := f.Limits()
	if !l.Supported || l.UnitMax < 16<<10 {
		t.Fatalf("limits %+v", l)
	}
	if sl, err := StatPath(name); err != nil || sl.UnitMax != l.UnitMax || !sl.Supported {
		t.Errorf("StatPath = %+v, %v; want %+v", sl, err, l)
	}

	const unit = 16 << 10
	raw := make([]byte, 2*unit+1)
	for i := range raw {
		raw[i] = byte(i*31 + 7)
	}
	writes := []struct {
		name string
		buf  []byte
		off  int64
	}{
		{"aligned buffer", alignedBuffer(unit, 4096), 0},
		{"unaligned buffer", raw[1 : 1+unit], unit},
		{"two units", raw[:2*unit], 4 * unit},
	}
	copy(writes[0].buf, raw[unit:])
	for _, w := range writes {
		n, err := f.WriteAtomicAt(w.buf, w.off)
		if err != nil || n != len(w.buf) {
			t.Fatalf("%s: WriteAtomicAt = %d, %v", w.name, n, err)
		}
		back := alignedBuffer(len(w.buf), 4096)
		if _, err := f.ReadAt(back, w.off); err != nil {
			t.Fatalf("%s: ReadAt: %v", w.name, err)
		}
		if string(back) != string(w.buf) {
			t.Errorf("%s: read back differs", w.name)
		}
	}

	bad := []struct {
		name string
		n    int
		off  int64
	}{
		{"not a power of two", 12 << 10, 0},
		{"empty", 0, 0},
		{"below unit min", int(l.UnitMin) / 2, 0},
		{"above unit max", int(l.UnitMax) * 2, 0},
		{"misaligned offset", unit, 4096},
		{"negative offset", unit, -unit},
	}
	for _, b := range bad {
		_, err := f.WriteAtomicAt(make([]byte, b.n), b.off)
		var pe *os.PathError
		if !errors.Is(err, ErrBadWrite) || !errors.As(err, &pe) || pe.Op != "pwritev2" {
			t.Errorf("%s: WriteAtomicAt error = %v, want ErrBadWrite in *os.PathError", b.name, err)
		}
	}
}

func TestVerifyXFSLargeUnitOnLoop(t *testing.T) {
	testutil.RequireRoot(t)
	// A unit above XFS's default max gets max_atomic_write=; the mount
	// must accept it and the filesystem then gives atomic writes of it.
	dev := testutil.LoopDevice(t, gib)
	limits, err := Sysfs{}.Probe(dev)
	if err != nil {
		t.Fatal(err)
	}
	const unit = 4 << 20
	p, err := PlanFormat(limits, PlanRequest{FSType: FSXFS, Unit: unit, Policy: PolicyRequire}, dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.MountOptions) != 1 {
		t.Fatalf("plan for %d has mount options %q", unit, p.MountOptions)
	}
	dir := formatPlanned(t, p)
	v, err := Verify(dir, unit)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Atomic || uint64(v.UnitMax) != p.AtomicUnitMax || v.Unit != unit {
		t.Errorf("verification %+v, want atomic up to %d", v, p.AtomicUnitMax)
	}
}

func TestVerifyExt4BigallocOnLoop(t *testing.T) {
	testutil.RequireRoot(t)
	dev := testutil.LoopDevice(t, gib)
	// Plan as for the NVMe fixture (hardware 4 KiB..64 KiB) and format the
	// loop device with it: the superblock is right, but the loop device has
	// no hardware atomic writes, so ext4 gives none.
	p, err := PlanFormat(probeFixture(t, "nvme0n1"), PlanRequest{FSType: FSExt4, Unit: 16 << 10, Policy: PolicyRequire}, dev)
	if err != nil {
		t.Fatal(err)
	}
	dir := formatPlanned(t, p)
	sb := testutil.Run(t, "dumpe2fs", "-h", dev)
	if !hasFeature(sb, "bigalloc") {
		t.Errorf("superblock lacks bigalloc:\n%s", sb)
	}
	if got := superField(sb, "Cluster size"); got != "65536" {
		t.Errorf("cluster size %q, want 65536", got)
	}
	if got := superField(sb, "Block size"); got != "4096" {
		t.Errorf("block size %q, want 4096", got)
	}

	v, err := Verify(dir, 16<<10)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("ext4 bigalloc verification: %+v", v)
	if v.Atomic || v.Reason == "" || !errors.Is(v.Cause, ErrNoHardware) || v.FSType != "ext4" || v.Device != dev {
		t.Errorf("ext4 on loop: %+v, want not atomic for lack of hardware", v)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("Verify left files behind: %v", names)
	}
	if _, err := OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600); !errors.Is(err, ErrUnsupported) {
		t.Errorf("OpenFile on ext4 without hardware: %v, want ErrUnsupported", err)
	}
}

func TestVerifyTmpfs(t *testing.T) {
	dir := testutil.Tmpfs(t)
	v, err := Verify(dir, 0)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if v.Atomic || !errors.Is(v.Cause, ErrUnsupported) || v.FSType != "tmpfs" || v.Device != "" {
		t.Errorf("tmpfs: %+v", v)
	}
}

func TestStatPathErrors(t *testing.T) {
	_, err := StatPath(filepath.Join(t.TempDir(), "missing"))
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "statx" || !errors.Is(err, syscall.ENOENT) || errors.Is(err, ErrUnsupported) {
		t.Errorf("StatPath(missing) = %v", err)
	}
	// The errnos that mean "unsupported" match both the errno and the sentinel.
	for _, errno := range []syscall.Errno{syscall.ENOSYS, syscall.EINVAL, syscall.EOPNOTSUPP} {
		err := &os.PathError{Op: "statx", Path: "p", Err: classify(errno)}
		if !errors.Is(err, ErrUnsupported) || !errors.Is(err, errno) {
			t.Errorf("classify(%v) does not match both", errno)
		}
	}
	if errors.Is(classify(syscall.EIO), ErrUnsupported) {
		t.Error("EIO classified as unsupported")
	}
}

func hasFeature(sb, feature string) bool {
	for _, f := range strings.Fields(superField(sb, "Filesystem features")) {
		if f == feature {
			return true
		}
	}
	return false
}

func superField(sb, key string) string {
	for _, line := range strings.Split(sb, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
