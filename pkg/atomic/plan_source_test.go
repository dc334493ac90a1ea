package atomic

import (
	"errors"
	"testing"
)

// TestPlanFormatHardwareSource: with SourceHardware, XFS on a device that
// cannot write the unit in hardware is a device limit (require fails with
// the reason, prefer formats plain), and where the device can, the plan is
// the hardware one. ext4 plans do not change.
func TestPlanFormatHardwareSource(t *testing.T) {
	tests := []struct {
		name string
		dev  string
		fs   FSType
		unit uint64
		want error // nil: an atomic hardware plan
	}{
		{"xfs on nvme 4Ki..64Ki", "nvme0n1", FSXFS, 16 << 10, nil},
		{"xfs 64Ki on nvme 4Ki..64Ki", "nvme0n1", FSXFS, 64 << 10, nil},
		{"xfs 128Ki above nvme max", "nvme0n1", FSXFS, 128 << 10, ErrUnitTooLarge},
		{"xfs 16Ki on 512B..16Ki", "nvme1n1", FSXFS, 16 << 10, nil},
		{"xfs 64Ki on 512B..16Ki", "nvme1n1", FSXFS, 64 << 10, ErrUnitTooLarge},
		{"xfs on loop", "loop0", FSXFS, 16 << 10, ErrNoHardware},
		{"xfs on old kernel", "sda1", FSXFS, 16 << 10, ErrNoHardware},
		{"xfs on misaligned partition", "nvme2n1p2", FSXFS, 16 << 10, ErrMisaligned},
		{"ext4 on nvme", "nvme0n1", FSExt4, 16 << 10, nil},
		{"ext4 on loop", "loop0", FSExt4, 16 << 10, ErrNoHardware},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := probeFixture(t, tt.dev)
			req := PlanRequest{FSType: tt.fs, Unit: tt.unit, Policy: PolicyRequire, Source: SourceHardware}
			p, err := PlanFormat(dev, req, "/dev/X")
			if !errors.Is(err, tt.want) {
				t.Fatalf("require: error = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				if !p.Atomic || !p.Hardware {
					t.Errorf("plan %+v, want atomic in hardware", p)
				}
				return
			}
			req.Policy = PolicyPrefer
			p, err = PlanFormat(dev, req, "/dev/X")
			if err != nil {
				t.Fatalf("prefer: %v", err)
			}
			if p.Atomic || p.Hardware || !errors.Is(p.Cause, tt.want) || p.FSType != tt.fs {
				t.Errorf("prefer plan is not a plain fallback: %+v", p)
			}
			// Without the hardware source XFS plans its software path.
			if tt.fs == FSXFS {
				req = PlanRequest{FSType: tt.fs, Unit: tt.unit, Policy: PolicyRequire, Source: SourceAny}
				if p, err := PlanFormat(dev, req, "/dev/X"); err != nil || !p.Atomic || p.Hardware {
					t.Errorf("source any: plan %+v, %v; want atomic in software", p, err)
				}
			}
		})
	}
}

func TestPlanFormatRejectsBadSource(t *testing.T) {
	_, err := PlanFormat(probeFixture(t, "nvme0n1"), PlanRequest{FSType: FSXFS, Unit: 16 << 10, Policy: PolicyRequire, Source: "firmware"}, "/dev/X")
	if !errors.Is(err, ErrInvalidSource) {
		t.Fatalf("error = %v, want %v", err, ErrInvalidSource)
	}
	for _, s := range []string{"", "Hardware", "software"} {
		if _, err := ParseSource(s); !errors.Is(err, ErrInvalidSource) {
			t.Errorf("ParseSource(%q) = %v, want %v", s, err, ErrInvalidSource)
		}
	}
}
