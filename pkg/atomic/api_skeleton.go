package atomic

// This file fixes the package's exported API. Implementations live in the
// files named in each comment; the skeleton bodies are replaced there.

import (
	"errors"
	"os"
)

// Sentinel errors. Callers compare with errors.Is; messages wrap these with
// the specifics (device, sizes, what would work).
var (
	// ErrUnsupported: the kernel, filesystem or device gives no atomic writes.
	ErrUnsupported = errors.New("atomic writes not supported")
	// ErrNoHardware: the device advertises no hardware atomic write unit.
	ErrNoHardware = errors.New("device reports no hardware atomic writes")
	// ErrMisaligned: a partition/volume start is not aligned as atomic writes need.
	ErrMisaligned = errors.New("start not aligned for atomic writes")
	// ErrUnitTooLarge: the requested unit exceeds what the device/filesystem allows.
	ErrUnitTooLarge = errors.New("atomic write unit too large")
	// ErrUnitTooSmall: the requested unit is below the minimum.
	ErrUnitTooSmall = errors.New("atomic write unit too small")
	// ErrNotPowerOfTwo: a unit or cluster size is not a power of two.
	ErrNotPowerOfTwo = errors.New("size is not a power of two")
	// ErrClusterOutOfRange: a cluster override is outside what works.
	ErrClusterOutOfRange = errors.New("cluster size out of range")
	// ErrInvalidSize: a size string does not parse as a Kubernetes quantity.
	ErrInvalidSize = errors.New("invalid size")
	// ErrInvalidFSType: fsType is not ext4 or xfs.
	ErrInvalidFSType = errors.New("invalid filesystem type")
	// ErrInvalidPolicy: policy is not require or prefer.
	ErrInvalidPolicy = errors.New("invalid atomic policy")
	// ErrNotBlockDevice: the path does not resolve to a block device in sysfs.
	ErrNotBlockDevice = errors.New("not a block device")
	// ErrBadWrite: an atomic write's length/offset/buffer violates the rules.
	ErrBadWrite = errors.New("invalid atomic write")
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

// Sysfs resolves block devices to sysfs directories (devices.go).
// Root defaults to "/sys"; DevRoot to "/dev". When ByName is true a device
// path is looked up by its base name under Root/class/block and the /dev
// node need not exist (untornctl --sysfs-root).
type Sysfs struct {
	Root    string
	DevRoot string
	ByName  bool
}

// DeviceLimits is what a block device advertises (devices.go). All sizes in
// bytes; zero means "none".
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
}

// Probe reads a device's limits (devices.go).
func (s Sysfs) Probe(device string) (DeviceLimits, error) { panic("skeleton") }

// HardwareAtomic reports whether the device advertises atomic writes and,
// for a partition, its start is aligned to max(UnitMin, Boundary).
func (d DeviceLimits) HardwareAtomic() bool { panic("skeleton") }

// AlignedTo reports whether the start (0 for a whole disk) is a multiple of size.
func (d DeviceLimits) AlignedTo(size uint64) bool { panic("skeleton") }

// FileLimits is what statx(STATX_WRITE_ATOMIC) reports for a file (statx_linux.go).
type FileLimits struct {
	Supported   bool   `json:"supported"` // STATX_ATTR_WRITE_ATOMIC set
	UnitMin     uint32 `json:"unitMin"`
	UnitMax     uint32 `json:"unitMax"`
	UnitMaxOpt  uint32 `json:"unitMaxOpt"`
	SegmentsMax uint32 `json:"segmentsMax"`
}

// StatPath and StatFd call statx. ENOSYS/EINVAL/EOPNOTSUPP wrap
// ErrUnsupported; errors are *os.PathError with Op "statx".
func StatPath(path string) (FileLimits, error)       { panic("skeleton") }
func StatFd(fd int, name string) (FileLimits, error) { panic("skeleton") }

// ParseSize parses a Kubernetes quantity such as "16Ki", "64Ki" or "16384"
// into bytes (size.go). Anything else wraps ErrInvalidSize.
func ParseSize(s string) (uint64, error) { panic("skeleton") }

// ParseFSType and ParsePolicy validate names ("" is not accepted here;
// callers apply their defaults first).
func ParseFSType(s string) (FSType, error) { panic("skeleton") }
func ParsePolicy(s string) (Policy, error) { panic("skeleton") }

// PlanRequest is what a volume asks for (plan.go).
type PlanRequest struct {
	FSType  FSType
	Unit    uint64 // required atomic write unit in bytes
	Cluster uint64 // optional ext4 bigalloc cluster override; 0 = choose
	Policy  Policy
}

// Plan is a format plan (plan.go).
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
	// Atomic is whether the filesystem is expected to give atomic writes of
	// Unit; AtomicUnitMin/Max the expected statx range.
	Atomic        bool   `json:"atomic"`
	Hardware      bool   `json:"hardware"` // atomic writes come from the device, not software (xfs CoW)
	AtomicUnitMin uint64 `json:"atomicUnitMin"`
	AtomicUnitMax uint64 `json:"atomicUnitMax"`
	Unit          uint64 `json:"unit"`
	// Reason explains a non-atomic plan under PolicyPrefer.
	Reason string `json:"reason,omitempty"`
}

// PlanFormat is a pure function from limits and request to a plan. Under
// PolicyRequire an impossible request returns an error wrapping one of the
// sentinels and saying what would work.
func PlanFormat(dev DeviceLimits, req PlanRequest, device string) (Plan, error) { panic("skeleton") }

// Verification is the result of Verify (verify_linux.go).
type Verification struct {
	Atomic      bool   `json:"atomic"`
	UnitMin     uint32 `json:"unitMin"`
	UnitMax     uint32 `json:"unitMax"`
	UnitMaxOpt  uint32 `json:"unitMaxOpt"`
	SegmentsMax uint32 `json:"segmentsMax"`
	Unit        uint64 `json:"unit"` // the unit that was written
	Reason      string `json:"reason,omitempty"`
}

// Verify checks a mounted filesystem (dir is a directory on it): an
// O_TMPFILE probe file, statx, a real pwritev2(RWF_ATOMIC) of unit bytes
// (0 = the filesystem's unit min) on an O_DIRECT descriptor, read back.
// A filesystem without atomic writes is not an error: Atomic=false with a
// Reason. Errors are for I/O failures.
func Verify(dir string, unit uint64) (Verification, error) { panic("skeleton") }

// File is a file opened for atomic writes (file_linux.go).
type File struct {
	f      *os.File
	limits FileLimits
}

// OpenFile opens name with O_DIRECT added to flag and checks statx.
func OpenFile(name string, flag int, perm os.FileMode) (*File, error) { panic("skeleton") }

// Limits returns the file's statx limits.
func (f *File) Limits() FileLimits { return f.limits }

// WriteAtomicAt writes b at off with RWF_ATOMIC. len(b) must be a power of
// two within [UnitMin, UnitMax] and off a multiple of len(b) (ErrBadWrite);
// an unaligned b is copied into an aligned buffer.
func (f *File) WriteAtomicAt(b []byte, off int64) (int, error) { panic("skeleton") }

// ReadAt, Close, Fd, Name delegate to the os.File.
func (f *File) ReadAt(b []byte, off int64) (int, error) { return f.f.ReadAt(b, off) }
func (f *File) Close() error                            { return f.f.Close() }
func (f *File) Fd() uintptr                             { return f.f.Fd() }
func (f *File) Name() string                            { return f.f.Name() }
