package atomic

import (
	"errors"
	"syscall"
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

// unsupportedErrno is an errno from statx or pwritev2 that means "no atomic
// writes here" (ENOSYS, EINVAL, EOPNOTSUPP). It reads as the errno and
// matches both the errno and ErrUnsupported with errors.Is.
type unsupportedErrno struct{ errno syscall.Errno }

func (e unsupportedErrno) Error() string   { return e.errno.Error() }
func (e unsupportedErrno) Unwrap() []error { return []error{e.errno, ErrUnsupported} }

// classify wraps the errnos that mean "unsupported" so that errors.Is(err,
// ErrUnsupported) holds; other errors are returned as they are.
func classify(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSYS, syscall.EINVAL, syscall.EOPNOTSUPP:
			return unsupportedErrno{errno}
		}
	}
	return err
}
