package atomic

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Sysfs resolves block devices to sysfs directories.
// Root defaults to "/sys"; DevRoot to "/dev". When ByName is true a device
// path is looked up by its base name under Root/class/block and the /dev
// node need not exist (untornctl --sysfs-root).
type Sysfs struct {
	Root    string
	DevRoot string
	ByName  bool
}

// DeviceLimits is what a block device advertises. All sizes in bytes; zero
// means "none".
type DeviceLimits struct {
	Device            string `json:"device"`      // as given
	Name              string `json:"name"`        // kernel name, e.g. nvme0n1p2
	Disk              string `json:"disk"`        // the disk whose queue/ is used
	Partition         bool   `json:"partition"`   //
	StartSector       uint64 `json:"startSector"` // partitions: start in 512-byte sectors
	UnitMin           uint64 `json:"atomicWriteUnitMin"`
	UnitMax           uint64 `json:"atomicWriteUnitMax"`
	MaxBytes          uint64 `json:"atomicWriteMaxBytes"`
	Boundary          uint64 `json:"atomicWriteBoundary"`
	LogicalBlockSize  uint64 `json:"logicalBlockSize"`
	PhysicalBlockSize uint64 `json:"physicalBlockSize"`
	SizeBytes         uint64 `json:"sizeBytes"`
	// Slaves lists the devices a stacked device (dm, md) is built on.
	Slaves []string `json:"slaves,omitempty"`
}

func (s Sysfs) root() string {
	if s.Root == "" {
		return "/sys"
	}
	return s.Root
}

// devPath maps a /dev path onto DevRoot (a host /dev mounted elsewhere).
func (s Sysfs) devPath(device string) string {
	if s.DevRoot == "" || s.DevRoot == "/dev" || !strings.HasPrefix(device, "/dev/") {
		return device
	}
	return filepath.Join(s.DevRoot, strings.TrimPrefix(device, "/dev/"))
}

// Probe reads a device's limits. A device is a /dev path (symlinks such as
// /dev/mapper/vg-lv are followed) or, with ByName, any path whose base name
// is the kernel name. A missing or zero atomic_write_* attribute means the
// device has no hardware atomic writes; it is not an error.
func (s Sysfs) Probe(device string) (DeviceLimits, error) {
	dir, err := s.sysDir(device)
	if err != nil {
		return DeviceLimits{}, err
	}
	d, err := readLimits(dir)
	if err != nil {
		return DeviceLimits{}, fmt.Errorf("%s: %w", device, err)
	}
	d.Device = device
	return d, nil
}

// ProbeDevNum reads the limits of the block device major:minor, e.g. the
// device a mounted filesystem lives on.
func (s Sysfs) ProbeDevNum(major, minor uint32) (DeviceLimits, error) {
	link := filepath.Join(s.root(), "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return DeviceLimits{}, fmt.Errorf("%w: %d:%d has no sysfs entry %s", ErrNotBlockDevice, major, minor, link)
	}
	d, err := readLimits(dir)
	if err != nil {
		return DeviceLimits{}, fmt.Errorf("%d:%d: %w", major, minor, err)
	}
	d.Device = "/dev/" + d.Name
	return d, nil
}

// sysDir resolves device to its real sysfs directory
// (Root/devices/.../<name>).
func (s Sysfs) sysDir(device string) (string, error) {
	if device == "" {
		return "", fmt.Errorf("%w: empty device path", ErrNotBlockDevice)
	}
	if s.ByName {
		return s.byName(device, filepath.Base(device))
	}
	p := s.devPath(device)
	// Errors also wrap the cause (errors.Is(err, fs.ErrNotExist) for a
	// missing node).
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNotBlockDevice, device, unwrapPath(err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNotBlockDevice, device, unwrapPath(err))
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return "", fmt.Errorf("%w: %s is a %s", ErrNotBlockDevice, device, describeMode(fi.Mode()))
	}
	if major, minor, ok := devNumbers(fi); ok {
		link := filepath.Join(s.root(), "dev", "block", fmt.Sprintf("%d:%d", major, minor))
		if dir, err := filepath.EvalSymlinks(link); err == nil {
			return dir, nil
		}
	}
	return s.byName(device, filepath.Base(real))
}

func (s Sysfs) byName(device, name string) (string, error) {
	link := filepath.Join(s.root(), "class", "block", name)
	dir, err := filepath.EvalSymlinks(link)
	if err == nil {
		return dir, nil
	}
	// A device-mapper name (/dev/mapper/vg-lv) is in <dm-N>/dm/name.
	names, _ := filepath.Glob(filepath.Join(s.root(), "class", "block", "*", "dm", "name"))
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.EvalSymlinks(filepath.Dir(filepath.Dir(n)))
		}
	}
	return "", fmt.Errorf("%w: %s: no %s", ErrNotBlockDevice, device, link)
}

// readLimits reads the limits of the sysfs block directory dir. A partition
// (a directory with a "partition" file) uses its parent disk's queue/.
func readLimits(dir string) (DeviceLimits, error) {
	d := DeviceLimits{Name: filepath.Base(dir), Disk: filepath.Base(dir)}
	if _, err := os.Stat(filepath.Join(dir, "size")); err != nil {
		return d, fmt.Errorf("%w: %s is not a sysfs block device directory", ErrNotBlockDevice, dir)
	}
	queue := filepath.Join(dir, "queue")
	if exists(filepath.Join(dir, "partition")) {
		d.Partition = true
		disk := filepath.Dir(dir)
		d.Disk = filepath.Base(disk)
		queue = filepath.Join(disk, "queue")
		start, err := readUint(filepath.Join(dir, "start"), true)
		if err != nil {
			return d, err
		}
		d.StartSector = start
	}
	if !exists(queue) {
		return d, fmt.Errorf("%w: %s has no queue directory", ErrNotBlockDevice, dir)
	}
	fields := []struct {
		name     string
		v        *uint64
		required bool
	}{
		{"atomic_write_unit_min_bytes", &d.UnitMin, false},
		{"atomic_write_unit_max_bytes", &d.UnitMax, false},
		{"atomic_write_max_bytes", &d.MaxBytes, false},
		{"atomic_write_boundary_bytes", &d.Boundary, false},
		{"logical_block_size", &d.LogicalBlockSize, true},
		{"physical_block_size", &d.PhysicalBlockSize, true},
	}
	for _, f := range fields {
		v, err := readUint(filepath.Join(queue, f.name), f.required)
		if err != nil {
			return d, err
		}
		*f.v = v
	}
	sectors, err := readUint(filepath.Join(dir, "size"), true)
	if err != nil {
		return d, err
	}
	d.SizeBytes = sectors * 512
	if err := checkLimits(dir, queue, d, sectors); err != nil {
		return d, err
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "slaves")); err == nil {
		for _, e := range ents {
			d.Slaves = append(d.Slaves, e.Name())
		}
	}
	return d, nil
}

// checkLimits rejects values no kernel reports: atomic unit min, max and
// boundary that are neither 0 nor a power of two, a unit min above the
// unit max, block sizes that are not powers of two of at least 512, and
// sector counts whose byte size overflows.
func checkLimits(dir, queue string, d DeviceLimits, sectors uint64) error {
	for _, f := range []struct {
		name string
		v    uint64
	}{
		{"atomic_write_unit_min_bytes", d.UnitMin},
		{"atomic_write_unit_max_bytes", d.UnitMax},
		{"atomic_write_boundary_bytes", d.Boundary},
	} {
		if f.v != 0 && !isPowerOfTwo(f.v) {
			return fmt.Errorf("%s: malformed value %d: not 0 or a power of two", filepath.Join(queue, f.name), f.v)
		}
	}
	if d.UnitMin != 0 && d.UnitMax != 0 && d.UnitMin > d.UnitMax {
		return fmt.Errorf("%s: atomic_write_unit_min_bytes %d is above atomic_write_unit_max_bytes %d", queue, d.UnitMin, d.UnitMax)
	}
	for _, f := range []struct {
		name string
		v    uint64
	}{
		{"logical_block_size", d.LogicalBlockSize},
		{"physical_block_size", d.PhysicalBlockSize},
	} {
		if f.v < 512 || !isPowerOfTwo(f.v) {
			return fmt.Errorf("%s: malformed value %d: not a power of two of at least 512", filepath.Join(queue, f.name), f.v)
		}
	}
	const maxSectors = math.MaxUint64 / 512
	if sectors > maxSectors {
		return fmt.Errorf("%s: malformed value %d: more sectors than 64-bit byte counts hold", filepath.Join(dir, "size"), sectors)
	}
	if d.StartSector > maxSectors {
		return fmt.Errorf("%s: malformed value %d: more sectors than 64-bit byte counts hold", filepath.Join(dir, "start"), d.StartSector)
	}
	return nil
}

// readUint reads a decimal sysfs attribute. A missing optional attribute
// reads as 0.
func readUint(path string, required bool) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if !required && errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: malformed value %q", path, strings.TrimSpace(string(b)))
	}
	return v, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	default:
		return "non-device file (" + m.Type().String() + ")"
	}
}

// HardwareAtomic reports whether the device advertises atomic writes and,
// for a partition, its start is aligned to max(UnitMin, Boundary) (the
// kernel disables atomic writes on a misaligned partition).
func (d DeviceLimits) HardwareAtomic() bool {
	if d.UnitMin == 0 || d.UnitMax == 0 || d.UnitMax < d.UnitMin {
		return false
	}
	return d.AlignedTo(d.RequiredAlignment())
}

// RequiredAlignment is max(UnitMin, Boundary): the alignment the kernel
// requires of a partition's start before it allows atomic writes on it.
func (d DeviceLimits) RequiredAlignment() uint64 {
	return max(d.UnitMin, d.Boundary)
}

// StartBytes is the partition's start in bytes (0 for a whole disk).
func (d DeviceLimits) StartBytes() uint64 {
	if !d.Partition {
		return 0
	}
	return d.StartSector * 512
}

// AlignedTo reports whether the start (0 for a whole disk) is a multiple of
// size. A size of 0 asks for nothing and is always met.
func (d DeviceLimits) AlignedTo(size uint64) bool {
	if size == 0 {
		return true
	}
	return d.StartBytes()%size == 0
}
