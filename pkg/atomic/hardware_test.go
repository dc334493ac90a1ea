package atomic

import "testing"

func TestHardwareAtomicMax(t *testing.T) {
	nvme := hwLimits(4096, 65536)
	misaligned := hwLimits(4096, 65536)
	misaligned.Partition, misaligned.StartSector = true, 1
	bigMin := hwLimits(16384, 65536)
	xfsSoft := FileLimits{Supported: true, UnitMin: 4096, UnitMax: 1 << 20, SegmentsMax: 1}
	xfsOpt := FileLimits{Supported: true, UnitMin: 4096, UnitMax: 1 << 20, UnitMaxOpt: 65536, SegmentsMax: 1}
	ext4 := FileLimits{Supported: true, UnitMin: 4096, UnitMax: 65536, SegmentsMax: 1}
	tests := []struct {
		name string
		fs   FSType
		fl   FileLimits
		dev  DeviceLimits
		want uint64
	}{
		{"ext4 bigalloc on nvme", FSExt4, ext4, nvme, 65536},
		{"ext4 unsupported", FSExt4, FileLimits{}, nvme, 0},
		{"xfs on loop", FSXFS, xfsSoft, DeviceLimits{LogicalBlockSize: 512}, 0},
		{"xfs reports max_opt", FSXFS, xfsOpt, nvme, 65536},
		{"xfs without max_opt falls back to device max", FSXFS, xfsSoft, nvme, 65536},
		{"xfs block below device min", FSXFS, xfsSoft, bigMin, 0},
		{"xfs on misaligned partition", FSXFS, xfsOpt, misaligned, 0},
		{"other filesystem", "btrfs", ext4, nvme, 0},
	}
	for _, tt := range tests {
		if got := HardwareAtomicMax(tt.fs, tt.fl, tt.dev); got != tt.want {
			t.Errorf("%s: HardwareAtomicMax = %d, want %d", tt.name, got, tt.want)
		}
	}
}
