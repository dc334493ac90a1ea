package driver

import (
	"fmt"
	"math"

	"github.com/container-storage-interface/spec/lib/go/csi"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Volume sizes, for CreateVolume, ControllerExpandVolume and
// NodeExpandVolume.

// defaultVolumeSize is used when the request gives no capacity.
const defaultVolumeSize = 1 << 30

// expansionGranularity is what an expansion-only controller rounds a new
// size up to, not knowing the volume's own granularity; the node rounds
// further when its backend needs it.
const expansionGranularity = 1 << 20

// minVolumeSize is the smallest volume each filesystem can be made on
// (mkfs.xfs refuses below 300 MiB).
func minVolumeSize(fs untorn.FSType) int64 {
	if fs == untorn.FSXFS {
		return 300 << 20
	}
	return 32 << 20
}

// volumeSize picks the size for a capacity range: at least required (or
// the default), at least the filesystem's minimum, rounded up to the
// backend's allocation unit and the ext4 cluster size.
func (d *Driver) volumeSize(cr *csi.CapacityRange, spec volumeSpec) (int64, error) {
	req, lim := cr.GetRequiredBytes(), cr.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, fmt.Errorf("%w: capacity range must not be negative", ErrInvalidArgument)
	}
	if lim > 0 && req > lim {
		return 0, fmt.Errorf("%w: required_bytes %d exceeds limit_bytes %d", ErrOutOfRange, req, lim)
	}
	size := req
	if size == 0 {
		size = defaultVolumeSize
		if lim > 0 && lim < size {
			size = lim
		}
	}
	size = max(size, minVolumeSize(spec.FSType))
	gran := int64(expansionGranularity)
	if !d.expansionOnly() {
		gran = d.backend.AllocationUnit()
	}
	if gran <= 0 {
		gran = 1
	}
	if c := int64(spec.Cluster); c > 0 {
		var ok bool
		if gran, ok = lcmChecked(gran, c); !ok {
			return 0, fmt.Errorf("%w: the allocation unit %d and cluster size %d have no common multiple below %d bytes",
				ErrOutOfRange, d.allocationUnit(), c, int64(math.MaxInt64))
		}
	}
	size, ok := roundUpChecked(size, gran)
	if !ok {
		return 0, fmt.Errorf("%w: required_bytes %d rounded up to a multiple of %d bytes exceeds the largest volume size %d",
			ErrOutOfRange, req, gran, int64(math.MaxInt64))
	}
	if lim > 0 && size > lim {
		return 0, fmt.Errorf("%w: the smallest volume that fits is %d bytes (minimum %d for %s, granularity %d), above limit_bytes %d",
			ErrOutOfRange, size, minVolumeSize(spec.FSType), spec.FSType, gran, lim)
	}
	return size, nil
}

func (d *Driver) allocationUnit() int64 {
	if d.expansionOnly() {
		return expansionGranularity
	}
	return d.backend.AllocationUnit()
}

// roundUpChecked rounds n (>= 0) up to a multiple of unit (> 0); ok is
// false when the result does not fit in an int64.
func roundUpChecked(n, unit int64) (int64, bool) {
	if n < 0 || unit <= 0 {
		return 0, false
	}
	if r := n % unit; r != 0 {
		if n > math.MaxInt64-(unit-r) {
			return 0, false
		}
		n += unit - r
	}
	return n, true
}

// lcmChecked is the least common multiple of a and b (both > 0); ok is
// false when it does not fit in an int64.
func lcmChecked(a, b int64) (int64, bool) {
	if a <= 0 || b <= 0 {
		return 0, false
	}
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	q := a / x
	if q > math.MaxInt64/b {
		return 0, false
	}
	return q * b, true
}
