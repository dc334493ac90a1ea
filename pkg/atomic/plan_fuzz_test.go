package atomic

import (
	"errors"
	"slices"
	"testing"
)

var planSentinels = []error{ErrUnsupported, ErrNoHardware, ErrMisaligned, ErrUnitTooLarge, ErrUnitTooSmall,
	ErrNotPowerOfTwo, ErrClusterOutOfRange, ErrInvalidFSType, ErrInvalidPolicy}

// FuzzPlanFormat checks the planner's invariants over arbitrary limits and
// requests: every error wraps a sentinel; an atomic plan's range holds the
// unit; an ext4 plan stays within the hardware range with a power-of-two
// cluster the start is aligned to; prefer never fails for device limits.
func FuzzPlanFormat(f *testing.F) {
	f.Add(uint64(4096), uint64(65536), uint64(0), uint64(0), false, uint64(4096), true, uint64(16384), uint64(0), true)
	f.Add(uint64(512), uint64(16384), uint64(0), uint64(2048), true, uint64(512), true, uint64(8192), uint64(0), false)
	f.Add(uint64(512), uint64(65536), uint64(131072), uint64(63), true, uint64(512), true, uint64(16384), uint64(0), true)
	f.Add(uint64(0), uint64(0), uint64(0), uint64(0), false, uint64(512), false, uint64(16384), uint64(0), false)
	f.Add(uint64(4096), uint64(65536), uint64(0), uint64(2056), true, uint64(4096), true, uint64(4096), uint64(32768), true)
	f.Fuzz(func(t *testing.T, umin, umax, boundary, start uint64, part bool, lbs uint64, ext4 bool, unit, cluster uint64, require bool) {
		dev := DeviceLimits{Name: "fz", UnitMin: umin, UnitMax: umax, MaxBytes: umax, Boundary: boundary,
			Partition: part, StartSector: start % (1 << 40), LogicalBlockSize: lbs}
		req := PlanRequest{FSType: FSXFS, Unit: unit, Cluster: cluster, Policy: PolicyPrefer}
		if ext4 {
			req.FSType = FSExt4
		}
		if require {
			req.Policy = PolicyRequire
		}
		p, err := PlanFormat(dev, req, "/dev/fz")
		if err != nil {
			wrapped := false
			for _, s := range planSentinels {
				wrapped = wrapped || errors.Is(err, s)
			}
			if !wrapped {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if len(p.MkfsArgs) < 2 || p.MkfsArgs[len(p.MkfsArgs)-1] != "/dev/fz" || p.MountOptions == nil {
			t.Fatalf("malformed plan %+v", p)
		}
		if !p.Atomic {
			if req.Policy == PolicyRequire || p.Reason == "" || p.Cause == nil || p.ClusterSize != 0 {
				t.Fatalf("non-atomic plan %+v under %s", p, req.Policy)
			}
			return
		}
		if !isPowerOfTwo(unit) || p.AtomicUnitMin > unit || unit > p.AtomicUnitMax || p.AtomicUnitMin < BlockSize {
			t.Fatalf("range %d..%d does not hold unit %d", p.AtomicUnitMin, p.AtomicUnitMax, unit)
		}
		if req.FSType == FSXFS {
			// A one-block copy-on-write hint, and it is what mkfs gets.
			if p.CoWExtSize != BlockSize || !slices.Contains(p.FormatOptions, "cowextsize=1") {
				t.Fatalf("xfs plan %+v: copy-on-write hint %d", p, p.CoWExtSize)
			}
			return
		}
		if p.CoWExtSize != 0 {
			t.Fatalf("ext4 plan with a copy-on-write hint: %+v", p)
		}
		if !p.Hardware || !dev.HardwareAtomic() || p.AtomicUnitMin < umin || p.AtomicUnitMax > umax {
			t.Fatalf("ext4 plan %+v outside hardware %+v", p, dev)
		}
		if c := p.ClusterSize; c != 0 && (!isPowerOfTwo(c) || c < unit || c > umax || !dev.AlignedTo(c)) {
			t.Fatalf("bad cluster %d for unit %d on %+v", c, unit, dev)
		}
		if cluster != 0 && cluster > BlockSize && p.ClusterSize != cluster {
			t.Fatalf("cluster override %d not honoured: %d", cluster, p.ClusterSize)
		}
	})
}
