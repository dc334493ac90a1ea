package atomic

import (
	"errors"
	"reflect"
	"testing"
)

func probeFixture(t *testing.T, name string) DeviceLimits {
	t.Helper()
	d, err := fixture().Probe("/dev/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPlanFormat(t *testing.T) {
	tests := []struct {
		name     string
		dev      string
		req      PlanRequest
		opts     []string
		mount    []string
		cluster  uint64
		min, max uint64
		hardware bool
	}{
		{"ext4 16Ki default cluster", "nvme0n1", PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "65536"}, nil, 65536, 4096, 65536, true},
		{"ext4 64Ki", "nvme0n1", PlanRequest{FSExt4, 64 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "65536"}, nil, 65536, 4096, 65536, true},
		{"ext4 4Ki needs no bigalloc", "nvme0n1", PlanRequest{FSExt4, 4096, 0, PolicyRequire, ""},
			[]string{"-b", "4096"}, nil, 0, 4096, 4096, true},
		{"ext4 cluster override", "nvme0n1", PlanRequest{FSExt4, 16 << 10, 32 << 10, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "32768"}, nil, 32768, 4096, 32768, true},
		{"ext4 cluster override with 4Ki unit", "nvme0n1", PlanRequest{FSExt4, 4096, 16 << 10, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "16384"}, nil, 16384, 4096, 16384, true},
		{"ext4 aligned partition", "nvme0n1p1", PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "65536"}, nil, 65536, 4096, 65536, true},
		{"ext4 512B LBA 16Ki AWUPF caps the cluster", "nvme1n1", PlanRequest{FSExt4, 8 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "16384"}, nil, 16384, 4096, 16384, true},
		{"ext4 boundary-aligned partition", "nvme2n1p1", PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "65536"}, nil, 65536, 4096, 65536, true},
		{"ext4 scsi", "sdb1", PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "32768"}, nil, 32768, 4096, 32768, true},
		{"ext4 dm-linear stacked", "dm-0", PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "4096", "-O", "bigalloc", "-C", "65536"}, nil, 65536, 4096, 65536, true},
		{"xfs on loop is software", "loop0", PlanRequest{FSXFS, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}, nil, 0, 4096, XFSDefaultAtomicMax, false},
		{"xfs on nvme is hardware", "nvme0n1", PlanRequest{FSXFS, 16 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}, nil, 0, 4096, XFSDefaultAtomicMax, true},
		{"xfs above hardware max is software", "nvme1n1", PlanRequest{FSXFS, 64 << 10, 0, PolicyRequire, ""},
			[]string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}, nil, 0, 4096, XFSDefaultAtomicMax, false},
		{"xfs on misaligned partition is software", "nvme2n1p2", PlanRequest{FSXFS, 16 << 10, 0, PolicyPrefer, ""},
			[]string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}, nil, 0, 4096, XFSDefaultAtomicMax, false},
		{"xfs large unit raises max_atomic_write", "loop0", PlanRequest{FSXFS, 4 << 20, 0, PolicyRequire, ""},
			[]string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}, []string{"max_atomic_write=4194304"}, 0, 4096, 4 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanFormat(probeFixture(t, tt.dev), tt.req, "/dev/X")
			if err != nil {
				t.Fatalf("PlanFormat: %v", err)
			}
			force := map[FSType]string{FSExt4: "-F", FSXFS: "-f"}[tt.req.FSType]
			wantArgs := append(append([]string{force}, tt.opts...), "/dev/X")
			if tt.mount == nil {
				tt.mount = []string{}
			}
			switch {
			case !p.Atomic || p.Reason != "" || p.Cause != nil:
				t.Errorf("plan not atomic: %+v", p)
			case p.FSType != tt.req.FSType || p.MkfsProgram != "mkfs."+string(tt.req.FSType):
				t.Errorf("fs %s program %s", p.FSType, p.MkfsProgram)
			case !reflect.DeepEqual(p.FormatOptions, tt.opts):
				t.Errorf("FormatOptions = %q, want %q", p.FormatOptions, tt.opts)
			case !reflect.DeepEqual(p.MkfsArgs, wantArgs):
				t.Errorf("MkfsArgs = %q, want %q", p.MkfsArgs, wantArgs)
			case !reflect.DeepEqual(p.MountOptions, tt.mount):
				t.Errorf("MountOptions = %q, want %q", p.MountOptions, tt.mount)
			case p.ClusterSize != tt.cluster:
				t.Errorf("ClusterSize = %d, want %d", p.ClusterSize, tt.cluster)
			case p.AtomicUnitMin != tt.min || p.AtomicUnitMax != tt.max:
				t.Errorf("range %d..%d, want %d..%d", p.AtomicUnitMin, p.AtomicUnitMax, tt.min, tt.max)
			case p.Hardware != tt.hardware:
				t.Errorf("Hardware = %v, want %v", p.Hardware, tt.hardware)
			case p.Unit != tt.req.Unit:
				t.Errorf("Unit = %d", p.Unit)
			}
		})
	}
}

// hwLimits builds limits for cases the fixtures do not cover.
func hwLimits(min, max uint64) DeviceLimits {
	return DeviceLimits{Name: "nvme9n1", Disk: "nvme9n1", UnitMin: min, UnitMax: max, MaxBytes: max,
		LogicalBlockSize: 4096, PhysicalBlockSize: 4096}
}

func TestPlanFormatRejects(t *testing.T) {
	misalignedCluster := probeFixture(t, "nvme0n1p2") // 4 KiB aligned only
	tests := []struct {
		name  string
		dev   DeviceLimits
		req   PlanRequest
		want  error
		limit bool // a device limit: PolicyPrefer falls back instead
	}{
		{"ext4 without hardware", probeFixture(t, "loop0"), PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""}, ErrNoHardware, true},
		{"ext4 on old kernel", probeFixture(t, "sda1"), PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""}, ErrNoHardware, true},
		{"ext4 on dm over loop", probeFixture(t, "dm-1"), PlanRequest{FSExt4, 4096, 0, PolicyRequire, ""}, ErrNoHardware, true},
		{"ext4 misaligned partition", probeFixture(t, "nvme2n1p2"), PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""}, ErrMisaligned, true},
		{"ext4 partition misaligned to unit", misalignedCluster, PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""}, ErrMisaligned, true},
		{"ext4 partition misaligned to cluster override", misalignedCluster, PlanRequest{FSExt4, 4096, 16 << 10, PolicyRequire, ""}, ErrMisaligned, true},
		{"ext4 unit above hardware max", probeFixture(t, "nvme1n1"), PlanRequest{FSExt4, 32 << 10, 0, PolicyRequire, ""}, ErrUnitTooLarge, true},
		{"ext4 unit below hardware min", hwLimits(16<<10, 64<<10), PlanRequest{FSExt4, 8 << 10, 0, PolicyRequire, ""}, ErrUnitTooSmall, true},
		{"ext4 cluster above hardware max", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 16 << 10, 128 << 10, PolicyRequire, ""}, ErrClusterOutOfRange, true},
		{"ext4 large logical blocks", DeviceLimits{UnitMin: 16 << 10, UnitMax: 64 << 10, LogicalBlockSize: 16 << 10}, PlanRequest{FSExt4, 16 << 10, 0, PolicyRequire, ""}, ErrUnsupported, true},
		{"cluster below unit", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 32 << 10, 16 << 10, PolicyRequire, ""}, ErrClusterOutOfRange, false},
		{"cluster not a power of two", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 16 << 10, 48 << 10, PolicyRequire, ""}, ErrNotPowerOfTwo, false},
		{"cluster with xfs", probeFixture(t, "nvme0n1"), PlanRequest{FSXFS, 16 << 10, 64 << 10, PolicyRequire, ""}, ErrClusterOutOfRange, false},
		{"unit not a power of two", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 12 << 10, 0, PolicyRequire, ""}, ErrNotPowerOfTwo, false},
		{"unit decimal 16k", probeFixture(t, "loop0"), PlanRequest{FSXFS, 16000, 0, PolicyPrefer, ""}, ErrNotPowerOfTwo, false},
		{"unit zero", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 0, 0, PolicyRequire, ""}, ErrUnitTooSmall, false},
		{"unit below block size", probeFixture(t, "nvme1n1"), PlanRequest{FSExt4, 512, 0, PolicyRequire, ""}, ErrUnitTooSmall, false},
		{"xfs unit too large", probeFixture(t, "loop0"), PlanRequest{FSXFS, 128 << 20, 0, PolicyRequire, ""}, ErrUnitTooLarge, false},
		{"bad fsType", probeFixture(t, "nvme0n1"), PlanRequest{"btrfs", 16 << 10, 0, PolicyRequire, ""}, ErrInvalidFSType, false},
		{"empty fsType", probeFixture(t, "nvme0n1"), PlanRequest{"", 16 << 10, 0, PolicyRequire, ""}, ErrInvalidFSType, false},
		{"bad policy", probeFixture(t, "nvme0n1"), PlanRequest{FSExt4, 16 << 10, 0, "maybe", ""}, ErrInvalidPolicy, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := PlanFormat(tt.dev, tt.req, "/dev/X")
			if !errors.Is(err, tt.want) {
				t.Fatalf("require: error = %v, want %v", err, tt.want)
			}
			var le limitError
			if errors.As(err, &le) {
				t.Errorf("internal marker leaked: %v", err)
			}
			if tt.want == ErrInvalidPolicy {
				return
			}
			prefer := tt.req
			prefer.Policy = PolicyPrefer
			p, err := PlanFormat(tt.dev, prefer, "/dev/X")
			if !tt.limit {
				if !errors.Is(err, tt.want) {
					t.Errorf("prefer: error = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("prefer: %v", err)
			}
			if p.Atomic || p.Hardware || p.Reason == "" || !errors.Is(p.Cause, tt.want) ||
				p.ClusterSize != 0 || p.AtomicUnitMax != 0 || p.AtomicUnitMin != 0 {
				t.Errorf("prefer plan is not a plain fallback: %+v", p)
			}
			wantArgs := []string{"-F", "-b", "4096", "/dev/X"}
			if !reflect.DeepEqual(p.MkfsArgs, wantArgs) || p.MkfsProgram != "mkfs.ext4" {
				t.Errorf("prefer MkfsArgs = %s %q, want %q", p.MkfsProgram, p.MkfsArgs, wantArgs)
			}
		})
	}
}

func TestPlanFormatPicksAlignedCluster(t *testing.T) {
	// A partition aligned to 16 KiB but not 64 KiB gets a 16 KiB cluster.
	d := hwLimits(4096, 65536)
	d.Partition, d.StartSector = true, 2048+32 // 1 MiB + 16 KiB
	p, err := PlanFormat(d, PlanRequest{FSExt4, 8 << 10, 0, PolicyRequire, ""}, "/dev/X")
	if err != nil {
		t.Fatal(err)
	}
	if p.ClusterSize != 16<<10 || p.AtomicUnitMax != 16<<10 {
		t.Errorf("cluster %d max %d, want 16 KiB", p.ClusterSize, p.AtomicUnitMax)
	}
}

// TestPlanXFSCoWExtSize checks the copy-on-write extent size hint of XFS
// plans: one block for every unit, in the mkfs options and in the plan;
// none for ext4 and for a plain fallback.
func TestPlanXFSCoWExtSize(t *testing.T) {
	for _, unit := range []uint64{4 << 10, 8 << 10, 16 << 10, 1 << 20, 64 << 20} {
		for _, dev := range []string{"loop0", "nvme0n1"} {
			p, err := PlanFormat(probeFixture(t, dev), PlanRequest{FSType: FSXFS, Unit: unit, Policy: PolicyRequire}, "/dev/X")
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1"}
			if !reflect.DeepEqual(p.FormatOptions, want) || p.CoWExtSize != BlockSize {
				t.Errorf("%s unit %s: options %q CoWExtSize %d, want %q %d", dev, FormatSize(unit), p.FormatOptions, p.CoWExtSize, want, BlockSize)
			}
		}
	}
	p, err := PlanFormat(probeFixture(t, "nvme0n1"), PlanRequest{FSType: FSExt4, Unit: 16 << 10, Policy: PolicyRequire}, "/dev/X")
	if err != nil || p.CoWExtSize != 0 {
		t.Errorf("ext4 plan CoWExtSize = %d, %v; want 0", p.CoWExtSize, err)
	}
	p, err = PlanFormat(probeFixture(t, "loop0"), PlanRequest{FSType: FSExt4, Unit: 16 << 10, Policy: PolicyPrefer}, "/dev/X")
	if err != nil || p.Atomic || p.CoWExtSize != 0 {
		t.Errorf("plain plan CoWExtSize = %d, %v; want 0", p.CoWExtSize, err)
	}
}
