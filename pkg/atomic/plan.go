package atomic

import (
	"errors"
	"fmt"
	"strconv"
)

// FSType is a filesystem the planner formats: ext4 or xfs.
type FSType string

const (
	FSExt4 FSType = "ext4"
	FSXFS  FSType = "xfs"
)

// Policy says what to do when atomic writes cannot be had.
type Policy string

const (
	PolicyRequire Policy = "require" // fail with a reason
	PolicyPrefer  Policy = "prefer"  // fall back to a plain format, not atomic
)

// Source says where atomic writes may come from.
type Source string

const (
	// SourceAny accepts XFS's copy-on-write software atomic writes where
	// the device has none (ext4's are always in hardware). The default.
	SourceAny Source = "any"
	// SourceHardware accepts only atomic writes the device performs.
	SourceHardware Source = "hardware"
)

// ErrInvalidSource: an atomic source is not any or hardware.
var ErrInvalidSource = errors.New("invalid atomic source")

// ParseSource validates an atomic source: "any" or "hardware". Callers
// apply their defaults first; "" is rejected.
func ParseSource(s string) (Source, error) {
	switch Source(s) {
	case SourceAny, SourceHardware:
		return Source(s), nil
	}
	if s == "" {
		return "", fmt.Errorf("%w: empty (accepted: any, hardware)", ErrInvalidSource)
	}
	return "", fmt.Errorf("%w: %q (accepted: any, hardware)", ErrInvalidSource, s)
}

// Planner constants.
const (
	// BlockSize is the filesystem block size every plan formats with.
	BlockSize = 4096
	// DefaultClusterCap caps the ext4 bigalloc cluster chosen by default
	// (the hardware unit max, at most this).
	DefaultClusterCap = 64 << 10
	// XFSDefaultAtomicMax is the smallest atomic write max XFS advertises by
	// default on the volumes untorn makes (1 MiB on a 1 GiB filesystem, more
	// on larger ones); a larger unit gets the max_atomic_write mount option.
	XFSDefaultAtomicMax = 1 << 20
	// XFSMaxUnit is the largest unit the planner asks of XFS.
	XFSMaxUnit = 64 << 20
	// XFSCoWExtSize is the copy-on-write extent size hint of atomic XFS
	// plans (see Plan.CoWExtSize): one block. It divides every block-aligned
	// write, so atomic writes of any size (the class's unit, or a smaller
	// page, as PostgreSQL's 8 KiB pages on a 16Ki class) leave no
	// copy-on-write reservation behind.
	XFSCoWExtSize = BlockSize
)

// PlanRequest is what a volume asks for.
type PlanRequest struct {
	FSType  FSType
	Unit    uint64 // required atomic write unit in bytes
	Cluster uint64 // optional ext4 bigalloc cluster override; 0 = choose
	Policy  Policy
	// Source is where the atomic writes may come from; "" is SourceAny.
	// SourceHardware makes a device without hardware atomic writes of
	// Unit a limit for XFS too (ext4 needs them anyway).
	Source Source
}

// Plan is a format plan.
type Plan struct {
	FSType FSType `json:"fsType"`
	// MkfsProgram is "mkfs.ext4" or "mkfs.xfs".
	MkfsProgram string `json:"mkfsProgram"`
	// FormatOptions are the planner's mkfs options, without the force flag
	// and without the device: what mount-utils'
	// FormatAndMountSensitiveWithFormatOptions takes.
	FormatOptions []string `json:"formatOptions"`
	// MkfsArgs is the full argument list for DEVICE (force flag and device
	// included), as untornctl prints it.
	MkfsArgs     []string `json:"mkfsArgs"`
	MountOptions []string `json:"mountOptions"`
	ClusterSize  uint64   `json:"clusterSize,omitempty"` // ext4 bigalloc cluster, 0 if none
	// CoWExtSize is the copy-on-write extent size hint, in bytes, of an
	// atomic XFS plan (XFSCoWExtSize; 0 otherwise), set by mkfs.xfs -d
	// cowextsize= on the root directory, from which new files and
	// directories inherit it. XFS's software atomic writes go through the
	// copy-on-write fork and allocate it in aligned multiples of the hint;
	// the default hint (32 blocks) leaves reservations around each random
	// page write that count as used space until XFS reclaims them (an idle
	// file after minutes, at the latest at unmount) and can fill the
	// volume. A one-block hint leaves none. A volume formatted before the
	// planner set the option gets the hint on its root with SetCoWExtSize.
	CoWExtSize uint64 `json:"cowExtSize,omitempty"`
	// Atomic is whether the filesystem is expected to give atomic writes of
	// Unit; AtomicUnitMin/Max the expected statx range. For ext4 the range
	// is exact; XFS advertises at least AtomicUnitMax (its software path
	// usually goes further, see XFSDefaultAtomicMax).
	Atomic        bool   `json:"atomic"`
	Hardware      bool   `json:"hardware"` // atomic writes come from the device, not software (xfs CoW)
	AtomicUnitMin uint64 `json:"atomicUnitMin"`
	AtomicUnitMax uint64 `json:"atomicUnitMax"`
	Unit          uint64 `json:"unit"`
	// Reason explains a non-atomic plan under PolicyPrefer.
	Reason string `json:"reason,omitempty"`
	// Cause is the sentinel-wrapping error behind Reason (nil when atomic).
	Cause error `json:"-"`
}

// PlanFormat is a pure function from limits and request to a plan for
// device (the path put into MkfsArgs). Invalid requests (unknown fsType or
// policy, a unit that is not a power of two or below the block size, a
// cluster override that is malformed or given for xfs) are errors under
// either policy. What the device cannot give (no hardware atomic writes for
// ext4, a unit above the hardware max, a misaligned partition, a cluster
// override outside the device's range) is an error under PolicyRequire that
// says what would work, and a plain, non-atomic plan with Reason under
// PolicyPrefer.
func PlanFormat(dev DeviceLimits, req PlanRequest, device string) (Plan, error) {
	if _, err := ParseFSType(string(req.FSType)); err != nil {
		return Plan{}, err
	}
	if _, err := ParsePolicy(string(req.Policy)); err != nil {
		return Plan{}, err
	}
	if req.Source != "" {
		if _, err := ParseSource(string(req.Source)); err != nil {
			return Plan{}, err
		}
	}
	if err := checkUnit(req); err != nil {
		return Plan{}, err
	}
	var p Plan
	var err error
	switch req.FSType {
	case FSExt4:
		p, err = planExt4(dev, req)
	default:
		p, err = planXFS(dev, req)
	}
	if err != nil {
		var le limitError
		if !errors.As(err, &le) || req.Policy == PolicyRequire {
			return Plan{}, unwrapLimit(err)
		}
		p = plainPlan(req, le.err)
	}
	p.Unit = req.Unit
	p.MkfsProgram = "mkfs." + string(p.FSType)
	force := "-F"
	if p.FSType == FSXFS {
		force = "-f"
	}
	p.MkfsArgs = append(append([]string{force}, p.FormatOptions...), device)
	if p.MountOptions == nil {
		p.MountOptions = []string{}
	}
	return p, nil
}

// limitError marks a failure that comes from what the device offers,
// which PolicyPrefer turns into a plain format. It never leaves PlanFormat.
type limitError struct{ err error }

func (e limitError) Error() string { return e.err.Error() }
func (e limitError) Unwrap() error { return e.err }

func deviceLimit(format string, args ...any) error {
	return limitError{fmt.Errorf(format, args...)}
}

func unwrapLimit(err error) error {
	var le limitError
	if errors.As(err, &le) {
		return le.err
	}
	return err
}

func checkUnit(req PlanRequest) error {
	if err := CheckUnit(req.FSType, req.Unit); err != nil {
		return err
	}
	return CheckCluster(req.FSType, req.Unit, req.Cluster)
}

// CheckUnit checks an atomic write unit for fs: a power of two, at least
// the block size, for xfs at most XFSMaxUnit. The planner and the driver's
// StorageClass validation both use it, so the rules have one home.
func CheckUnit(fs FSType, u uint64) error {
	switch {
	case u == 0:
		return fmt.Errorf("%w: atomic write unit is required (e.g. 16Ki)", ErrUnitTooSmall)
	case !isPowerOfTwo(u):
		return fmt.Errorf("%w: atomic write unit %d; use a power of two such as %s or %s",
			ErrNotPowerOfTwo, u, FormatSize(max(BlockSize, floorPowerOfTwo(u))), FormatSize(max(BlockSize, 2*floorPowerOfTwo(u))))
	case u < BlockSize:
		return fmt.Errorf("%w: atomic write unit %s is below the filesystem block size 4Ki; use 4Ki or more",
			ErrUnitTooSmall, FormatSize(u))
	case fs == FSXFS && u > XFSMaxUnit:
		return fmt.Errorf("%w: atomic write unit %s is above %s, the most untorn asks of xfs",
			ErrUnitTooLarge, FormatSize(u), FormatSize(XFSMaxUnit))
	}
	return nil
}

// CheckCluster checks an ext4 bigalloc cluster override (0: none, the
// planner chooses) against the unit u: ext4 only, a power of two, at least
// the unit.
func CheckCluster(fs FSType, u, cluster uint64) error {
	if cluster == 0 {
		return nil
	}
	if fs != FSExt4 {
		return fmt.Errorf("%w: a cluster size applies to ext4 bigalloc only, not %s", ErrClusterOutOfRange, fs)
	}
	if !isPowerOfTwo(cluster) {
		return fmt.Errorf("%w: cluster size %d; use a power of two such as %s", ErrNotPowerOfTwo, cluster,
			FormatSize(max(BlockSize, floorPowerOfTwo(cluster))))
	}
	if cluster < u {
		return fmt.Errorf("%w: cluster size %s is below the atomic write unit %s; the cluster must be at least the unit",
			ErrClusterOutOfRange, FormatSize(cluster), FormatSize(u))
	}
	return nil
}

func planExt4(dev DeviceLimits, req PlanRequest) (Plan, error) {
	u := req.Unit
	name := deviceName(dev)
	if dev.UnitMin == 0 || dev.UnitMax == 0 {
		return Plan{}, deviceLimit("%w: %s (atomic_write_unit_max_bytes is 0 or absent); ext4 needs them — use fsType xfs for software atomic writes",
			ErrNoHardware, name)
	}
	if align := dev.RequiredAlignment(); !dev.AlignedTo(align) {
		return Plan{}, deviceLimit("%w: partition %s starts at byte %d, not a multiple of %s (max of atomic unit min and boundary), so the kernel disables atomic writes on it; realign the partition (1 MiB alignment works), use the whole disk, or use fsType xfs for software atomic writes",
			ErrMisaligned, name, dev.StartBytes(), FormatSize(align))
	}
	if dev.LogicalBlockSize > BlockSize {
		return Plan{}, deviceLimit("%w: %s has %d-byte logical blocks, above the 4Ki ext4 block size untorn formats with",
			ErrUnsupported, name, dev.LogicalBlockSize)
	}
	hwMax := floorPowerOfTwo(dev.UnitMax)
	lo := max(BlockSize, dev.UnitMin)
	if u > hwMax {
		return Plan{}, deviceLimit("%w: atomic write unit %s exceeds %s's hardware atomic unit max %s; use a unit of at most %s, or fsType xfs for software atomic writes",
			ErrUnitTooLarge, FormatSize(u), name, FormatSize(hwMax), FormatSize(hwMax))
	}
	if u < lo {
		return Plan{}, deviceLimit("%w: atomic write unit %s is below %s's hardware atomic unit min %s; use a unit of at least %s",
			ErrUnitTooSmall, FormatSize(u), name, FormatSize(dev.UnitMin), FormatSize(lo))
	}
	p := Plan{FSType: FSExt4, Atomic: true, Hardware: true, AtomicUnitMin: lo}
	cluster, err := ext4Cluster(dev, req, hwMax)
	if err != nil {
		return Plan{}, err
	}
	p.FormatOptions = []string{"-b", strconv.Itoa(BlockSize)}
	if cluster > BlockSize {
		p.ClusterSize = cluster
		p.FormatOptions = append(p.FormatOptions, "-O", "bigalloc", "-C", strconv.FormatUint(cluster, 10))
	}
	p.AtomicUnitMax = min(max(cluster, BlockSize), hwMax)
	return p, nil
}

// ext4Cluster returns the bigalloc cluster (BlockSize when none is needed).
// The volume start must be aligned to it.
func ext4Cluster(dev DeviceLimits, req PlanRequest, hwMax uint64) (uint64, error) {
	u, name := req.Unit, deviceName(dev)
	if c := req.Cluster; c != 0 {
		if c > hwMax {
			return 0, deviceLimit("%w: cluster size %s exceeds %s's hardware atomic unit max %s; use a cluster between %s and %s",
				ErrClusterOutOfRange, FormatSize(c), name, FormatSize(hwMax), FormatSize(u), FormatSize(hwMax))
		}
		if !dev.AlignedTo(c) {
			return 0, deviceLimit("%w: partition %s starts at byte %d, not a multiple of the cluster size %s; realign the partition or use a smaller cluster",
				ErrMisaligned, name, dev.StartBytes(), FormatSize(c))
		}
		return c, nil
	}
	if u == BlockSize {
		return BlockSize, nil
	}
	// The largest power of two in [u, min(hwMax, cap)] the start is aligned to.
	for c := max(u, min(hwMax, DefaultClusterCap)); c >= u; c /= 2 {
		if dev.AlignedTo(c) {
			return c, nil
		}
	}
	return 0, deviceLimit("%w: partition %s starts at byte %d, not a multiple of the atomic write unit %s; realign the partition (1 MiB alignment works)",
		ErrMisaligned, name, dev.StartBytes(), FormatSize(u))
}

func planXFS(dev DeviceLimits, req PlanRequest) (Plan, error) {
	u := req.Unit
	p := Plan{
		FSType: FSXFS,
		FormatOptions: []string{"-b", "size=" + strconv.Itoa(BlockSize), "-m", "reflink=1",
			"-d", "cowextsize=" + strconv.Itoa(XFSCoWExtSize/BlockSize)},
		Atomic:        true,
		AtomicUnitMin: BlockSize,
		AtomicUnitMax: max(u, XFSDefaultAtomicMax),
		CoWExtSize:    XFSCoWExtSize,
	}
	if u > XFSDefaultAtomicMax {
		p.MountOptions = []string{"max_atomic_write=" + strconv.FormatUint(u, 10)}
	}
	// XFS writes in hardware when the device's range covers the block size
	// and the unit; otherwise it falls back to its copy-on-write path.
	p.Hardware = dev.HardwareAtomic() && dev.UnitMin <= BlockSize && u <= dev.UnitMax &&
		dev.LogicalBlockSize <= BlockSize
	if !p.Hardware && req.Source == SourceHardware {
		return Plan{}, xfsNoHardware(dev, u)
	}
	return p, nil
}

// xfsNoHardware says why XFS on dev would write units of u in software.
func xfsNoHardware(dev DeviceLimits, u uint64) error {
	name := deviceName(dev)
	switch {
	case dev.UnitMin == 0 || dev.UnitMax == 0:
		return deviceLimit("%w: %s (atomic_write_unit_max_bytes is 0 or absent), so XFS would write atomically in software; atomicSource hardware needs them — use atomicSource any for software atomic writes",
			ErrNoHardware, name)
	case !dev.HardwareAtomic():
		return deviceLimit("%w: partition %s starts at byte %d, not a multiple of %s (max of atomic unit min and boundary), so the kernel disables its hardware atomic writes; realign the partition (1 MiB alignment works) or use atomicSource any",
			ErrMisaligned, name, dev.StartBytes(), FormatSize(dev.RequiredAlignment()))
	case u > dev.UnitMax:
		return deviceLimit("%w: atomic write unit %s exceeds %s's hardware atomic unit max %s, so XFS would write it in software; use a unit of at most %s, or atomicSource any",
			ErrUnitTooLarge, FormatSize(u), name, FormatSize(dev.UnitMax), FormatSize(dev.UnitMax))
	case dev.LogicalBlockSize > BlockSize:
		return deviceLimit("%w: %s has %d-byte logical blocks, above the 4Ki XFS block size untorn formats with",
			ErrUnsupported, name, dev.LogicalBlockSize)
	}
	return deviceLimit("%w: %s's hardware atomic unit min %s is above the 4Ki XFS block size, so XFS would write atomically in software; use atomicSource any",
		ErrUnitTooSmall, name, FormatSize(dev.UnitMin))
}

// plainPlan is the non-atomic fallback of PolicyPrefer.
func plainPlan(req PlanRequest, cause error) Plan {
	p := Plan{FSType: req.FSType, Reason: cause.Error() + "; formatting without atomic writes (policy prefer)", Cause: cause}
	if req.FSType == FSXFS {
		p.FormatOptions = []string{"-b", "size=" + strconv.Itoa(BlockSize)}
	} else {
		p.FormatOptions = []string{"-b", strconv.Itoa(BlockSize)}
	}
	return p
}

func deviceName(d DeviceLimits) string {
	if d.Device != "" {
		return d.Device
	}
	if d.Name != "" {
		return d.Name
	}
	return "the device"
}
