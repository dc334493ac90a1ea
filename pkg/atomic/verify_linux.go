package atomic

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Verification is the result of Verify.
type Verification struct {
	Atomic      bool   `json:"atomic"`
	UnitMin     uint32 `json:"unitMin"`
	UnitMax     uint32 `json:"unitMax"`
	UnitMaxOpt  uint32 `json:"unitMaxOpt"`
	SegmentsMax uint32 `json:"segmentsMax"`
	Unit        uint64 `json:"unit"` // the unit that was written
	Reason      string `json:"reason,omitempty"`
	// FSType is the filesystem's name ("ext4", "xfs", "tmpfs" ...).
	FSType string `json:"fsType"`
	// Device is the block device the filesystem lives on ("" when it has
	// none or sysfs does not know it).
	Device string `json:"device,omitempty"`
	// Hardware is whether an atomic write of Unit is done by the device
	// rather than by the filesystem in software (see HardwareAtomicMax).
	Hardware bool `json:"hardware"`
	// Cause wraps the sentinel behind Reason: ErrNoHardware (ext4 on a
	// device without hardware atomic writes), ErrUnsupported,
	// ErrUnitTooLarge or ErrUnitTooSmall. Nil when Atomic.
	Cause error `json:"-"`
}

// Verify checks a mounted filesystem (dir is a directory on it): an
// O_TMPFILE probe file, statx, a real pwritev2(RWF_ATOMIC) of unit bytes
// (0 = the filesystem's unit min) at offset 0 on an O_DIRECT descriptor,
// read back. Nothing is left on the filesystem. A filesystem without atomic
// writes is not an error: Atomic=false with a Reason and Cause. Errors are
// for bad arguments and I/O failures.
func Verify(dir string, unit uint64) (Verification, error) {
	return VerifyWith(Sysfs{}, dir, unit)
}

// VerifyWith is Verify with the sysfs used to look up the filesystem's
// device.
func VerifyWith(sys Sysfs, dir string, unit uint64) (Verification, error) {
	var v Verification
	if unit != 0 && !isPowerOfTwo(unit) {
		return v, fmt.Errorf("%w: unit %d", ErrNotPowerOfTwo, unit)
	}
	var sfs unix.Statfs_t
	if err := ignoringEINTR(func() error { return unix.Statfs(dir, &sfs) }); err != nil {
		return v, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	v.FSType = fsName(sfs.Type)
	fd, err := openTmp(dir)
	if err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EISDIR) {
			v.Cause = fmt.Errorf("%w: %s: %v", ErrUnsupported, v.FSType, err)
			v.Reason = fmt.Sprintf("%s cannot create an O_DIRECT O_TMPFILE probe file (%v); it has no atomic writes", v.FSType, unwrapPath(err))
			return v, nil
		}
		return v, err
	}
	defer unix.Close(fd)
	l, err := StatFd(fd, dir)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			v.Cause = err
			v.Reason = fmt.Sprintf("the kernel does not support statx(STATX_WRITE_ATOMIC) (%v); atomic writes need Linux 6.11 or later (ext4 6.13, XFS software atomic writes 6.16)", unwrapPath(err))
			return v, nil
		}
		return v, err
	}
	v.UnitMin, v.UnitMax, v.UnitMaxOpt, v.SegmentsMax = l.UnitMin, l.UnitMax, l.UnitMaxOpt, l.SegmentsMax
	dev, devErr := sys.ProbeDevNum(l.DevMajor, l.DevMinor)
	if devErr == nil {
		v.Device = dev.Device
	}
	if !l.Supported {
		v.Cause, v.Reason = noAtomicReason(v.FSType, dev, devErr)
		return v, nil
	}
	if unit == 0 {
		unit = uint64(l.UnitMin)
	}
	v.Unit = unit
	if v.Reason, v.Cause = unitOutside(unit, l.UnitMin, l.UnitMax); v.Cause != nil {
		return v, nil
	}
	if err := probeWrite(fd, dir, unit, int(max(l.DioMemAlign, 512))); err != nil {
		if errors.Is(err, ErrUnsupported) {
			v.Cause = err
			v.Reason = fmt.Sprintf("statx advertises atomic writes of %s..%s but pwritev2(RWF_ATOMIC) of %s failed: %v",
				FormatSize(uint64(l.UnitMin)), FormatSize(uint64(l.UnitMax)), FormatSize(unit), unwrapPath(err))
			return v, nil
		}
		return v, err
	}
	v.Atomic = true
	if devErr == nil {
		v.Hardware = unit <= HardwareAtomicMax(FSType(v.FSType), l, dev)
	}
	return v, nil
}

// unitOutside says why unit is outside the filesystem's atomic write range
// lo..hi (a nil cause when it is inside).
func unitOutside(unit uint64, lo, hi uint32) (string, error) {
	switch {
	case unit < uint64(lo):
		return fmt.Sprintf("atomic write unit %s is below the filesystem's unit min %s", FormatSize(unit), FormatSize(uint64(lo))),
			fmt.Errorf("%w: %d < %d", ErrUnitTooSmall, unit, lo)
	case unit > uint64(hi):
		return fmt.Sprintf("atomic write unit %s is above the filesystem's unit max %s", FormatSize(unit), FormatSize(uint64(hi))),
			fmt.Errorf("%w: %d > %d", ErrUnitTooLarge, unit, hi)
	}
	return "", nil
}

// HardwareAtomicMax is the largest atomic write the device itself performs
// on a mounted filesystem with statx limits fl on device dev (0: none; all
// atomic writes are software). ext4 has only hardware atomic writes. XFS
// reports its hardware-backed maximum as unit_max_opt; on older kernels it
// is the device's unit max when the device's range covers the XFS block.
func HardwareAtomicMax(fs FSType, fl FileLimits, dev DeviceLimits) uint64 {
	if !fl.Supported || !dev.HardwareAtomic() {
		return 0
	}
	switch fs {
	case FSExt4:
		return uint64(fl.UnitMax)
	case FSXFS:
		if fl.UnitMaxOpt != 0 {
			return uint64(fl.UnitMaxOpt)
		}
		if dev.UnitMin <= uint64(fl.UnitMin) {
			return min(dev.UnitMax, uint64(fl.UnitMax))
		}
	}
	return 0
}

func noAtomicReason(fs string, dev DeviceLimits, devErr error) (error, string) {
	base := fs + " reports no atomic write support (STATX_ATTR_WRITE_ATOMIC unset)"
	switch FSType(fs) {
	case FSExt4:
		if devErr == nil && !dev.HardwareAtomic() {
			if dev.UnitMax == 0 {
				return fmt.Errorf("%w: %s", ErrNoHardware, dev.Device),
					base + "; ext4 needs hardware atomic writes and device " + dev.Device + " advertises none (atomic_write_unit_max_bytes is 0) — use xfs for software atomic writes"
			}
			return fmt.Errorf("%w: %s", ErrMisaligned, dev.Device),
				fmt.Sprintf("%s; partition %s starts at byte %d, not a multiple of %s, so the kernel disables atomic writes on it",
					base, dev.Device, dev.StartBytes(), FormatSize(dev.RequiredAlignment()))
		}
		return fmt.Errorf("%w: ext4", ErrUnsupported),
			base + "; ext4 needs hardware atomic writes from the device, Linux 6.13+ (6.16+ with bigalloc for units above the block size), and a block size within the device's atomic range"
	case FSXFS:
		return fmt.Errorf("%w: xfs", ErrUnsupported),
			base + "; xfs needs Linux 6.16+ and reflink=1 for software atomic writes, or hardware atomic writes from the device"
	}
	return fmt.Errorf("%w: %s", ErrUnsupported, fs), base + "; " + fs + " has no atomic writes: use ext4 or xfs"
}

// openTmp opens an unnamed O_TMPFILE O_DIRECT file in dir.
func openTmp(dir string) (int, error) {
	for {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
		}
		return fd, nil
	}
}

// probeWrite writes unit bytes of a pattern with RWF_ATOMIC at offset 0
// (aligned to any unit) and reads them back.
func probeWrite(fd int, dir string, unit uint64, align int) error {
	n := int(unit)
	buf := alignedBuffer(n, align)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8 + 0x5a)
	}
	off := int64(0)
	w, err := pwriteAtomic(fd, buf, off)
	if err != nil {
		return &os.PathError{Op: "pwritev2 RWF_ATOMIC", Path: dir, Err: err}
	}
	if w != n {
		return fmt.Errorf("pwritev2 RWF_ATOMIC %s: short write %d of %d", dir, w, n)
	}
	back := alignedBuffer(n, align)
	if err := preadFull(fd, back, off); err != nil {
		return &os.PathError{Op: "pread", Path: dir, Err: err}
	}
	if !bytes.Equal(buf, back) {
		return fmt.Errorf("%s: probe write of %d bytes read back different data", dir, n)
	}
	return nil
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func fsName(magic int64) string {
	switch uint32(magic) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	}
	return fmt.Sprintf("filesystem 0x%x", uint32(magic))
}
