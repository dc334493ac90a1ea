package atomic

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const fixtureRoot = "testdata/sysfs"

func fixture() Sysfs { return Sysfs{Root: fixtureRoot, ByName: true} }

func TestProbeFixtures(t *testing.T) {
	tests := []struct {
		device    string
		want      DeviceLimits
		hardware  bool
		alignedTo map[uint64]bool
	}{
		{
			device: "/dev/nvme0n1",
			want: DeviceLimits{Name: "nvme0n1", Disk: "nvme0n1", UnitMin: 4096, UnitMax: 65536, MaxBytes: 65536,
				LogicalBlockSize: 4096, PhysicalBlockSize: 4096, SizeBytes: 1 << 30},
			hardware:  true,
			alignedTo: map[uint64]bool{65536: true, 1 << 20: true},
		},
		{
			device: "/dev/nvme0n1p1",
			want: DeviceLimits{Name: "nvme0n1p1", Disk: "nvme0n1", Partition: true, StartSector: 2048, UnitMin: 4096,
				UnitMax: 65536, MaxBytes: 65536, LogicalBlockSize: 4096, PhysicalBlockSize: 4096, SizeBytes: 512 << 20},
			hardware:  true,
			alignedTo: map[uint64]bool{4096: true, 65536: true, 1 << 20: true, 2 << 20: false},
		},
		{
			device: "/dev/nvme0n1p2",
			want: DeviceLimits{Name: "nvme0n1p2", Disk: "nvme0n1", Partition: true, StartSector: 1050632, UnitMin: 4096,
				UnitMax: 65536, MaxBytes: 65536, LogicalBlockSize: 4096, PhysicalBlockSize: 4096, SizeBytes: 1046520 * 512},
			hardware:  true, // the kernel only needs max(unit min, boundary) = 4 KiB
			alignedTo: map[uint64]bool{4096: true, 8192: false, 65536: false},
		},
		{
			device: "/dev/nvme1n1",
			want: DeviceLimits{Name: "nvme1n1", Disk: "nvme1n1", UnitMin: 512, UnitMax: 16384, MaxBytes: 16384,
				LogicalBlockSize: 512, PhysicalBlockSize: 512, SizeBytes: 2 << 30},
			hardware: true,
		},
		{
			device: "nvme1n1p1",
			want: DeviceLimits{Name: "nvme1n1p1", Disk: "nvme1n1", Partition: true, StartSector: 2048, UnitMin: 512,
				UnitMax: 16384, MaxBytes: 16384, LogicalBlockSize: 512, PhysicalBlockSize: 512, SizeBytes: 4192256 * 512},
			hardware: true,
		},
		{
			device: "/dev/nvme2n1p1",
			want: DeviceLimits{Name: "nvme2n1p1", Disk: "nvme2n1", Partition: true, StartSector: 2048, UnitMin: 512,
				UnitMax: 65536, MaxBytes: 65536, Boundary: 131072, LogicalBlockSize: 512, PhysicalBlockSize: 512,
				SizeBytes: 1 << 30},
			hardware:  true,
			alignedTo: map[uint64]bool{131072: true},
		},
		{
			device: "/dev/nvme2n1p2",
			want: DeviceLimits{Name: "nvme2n1p2", Disk: "nvme2n1", Partition: true, StartSector: 2099263, UnitMin: 512,
				UnitMax: 65536, MaxBytes: 65536, Boundary: 131072, LogicalBlockSize: 512, PhysicalBlockSize: 512,
				SizeBytes: 2095041 * 512},
			hardware:  false, // misaligned to the 128 KiB boundary
			alignedTo: map[uint64]bool{512: true, 4096: false, 131072: false},
		},
		{
			device: "/dev/sdb1",
			want: DeviceLimits{Name: "sdb1", Disk: "sdb", Partition: true, StartSector: 2048, UnitMin: 4096,
				UnitMax: 32768, MaxBytes: 32768, LogicalBlockSize: 512, PhysicalBlockSize: 4096, SizeBytes: 8386560 * 512},
			hardware: true,
		},
		{
			device: "/dev/sda1", // kernel without atomic_write_* attributes
			want: DeviceLimits{Name: "sda1", Disk: "sda", Partition: true, StartSector: 2048,
				LogicalBlockSize: 512, PhysicalBlockSize: 512, SizeBytes: 8386560 * 512},
			hardware: false,
		},
		{
			device: "/dev/loop0",
			want: DeviceLimits{Name: "loop0", Disk: "loop0", LogicalBlockSize: 512, PhysicalBlockSize: 512,
				SizeBytes: 1 << 30},
			hardware:  false,
			alignedTo: map[uint64]bool{0: true, 4096: true},
		},
		{
			device: "/dev/dm-0",
			want: DeviceLimits{Name: "dm-0", Disk: "dm-0", UnitMin: 4096, UnitMax: 65536, MaxBytes: 65536,
				LogicalBlockSize: 4096, PhysicalBlockSize: 4096, SizeBytes: 512 << 20, Slaves: []string{"nvme0n1p1"}},
			hardware: true,
		},
		{
			device: "/dev/mapper/vg0-lv0", // dm name
			want: DeviceLimits{Name: "dm-0", Disk: "dm-0", UnitMin: 4096, UnitMax: 65536, MaxBytes: 65536,
				LogicalBlockSize: 4096, PhysicalBlockSize: 4096, SizeBytes: 512 << 20, Slaves: []string{"nvme0n1p1"}},
			hardware: true,
		},
		{
			device: "/dev/dm-1",
			want: DeviceLimits{Name: "dm-1", Disk: "dm-1", LogicalBlockSize: 512, PhysicalBlockSize: 512,
				SizeBytes: 512 << 20, Slaves: []string{"loop0"}},
			hardware: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			got, err := fixture().Probe(tt.device)
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			tt.want.Device = tt.device
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Probe:\n got %+v\nwant %+v", got, tt.want)
			}
			if h := got.HardwareAtomic(); h != tt.hardware {
				t.Errorf("HardwareAtomic = %v, want %v", h, tt.hardware)
			}
			for size, want := range tt.alignedTo {
				if a := got.AlignedTo(size); a != want {
					t.Errorf("AlignedTo(%d) = %v, want %v", size, a, want)
				}
			}
		})
	}
}

func TestProbeDevNumFixture(t *testing.T) {
	tests := []struct {
		major, minor uint32
		name         string
		partition    bool
	}{
		{259, 1, "nvme0n1p1", true},
		{253, 0, "dm-0", false},
		{7, 0, "loop0", false},
	}
	for _, tt := range tests {
		got, err := fixture().ProbeDevNum(tt.major, tt.minor)
		if err != nil {
			t.Fatalf("ProbeDevNum(%d:%d): %v", tt.major, tt.minor, err)
		}
		if got.Name != tt.name || got.Partition != tt.partition || got.Device != "/dev/"+tt.name {
			t.Errorf("ProbeDevNum(%d:%d) = %+v, want name %s partition %v", tt.major, tt.minor, got, tt.name, tt.partition)
		}
	}
	if _, err := fixture().ProbeDevNum(1, 99); !errors.Is(err, ErrNotBlockDevice) {
		t.Errorf("ProbeDevNum(1:99) error = %v, want ErrNotBlockDevice", err)
	}
}

func TestProbeErrors(t *testing.T) {
	// A broken tree: a block directory without queue/ or size.
	broken := t.TempDir()
	mustMkdir(t, filepath.Join(broken, "devices", "virtual", "block", "vda"))
	mustMkdir(t, filepath.Join(broken, "devices", "virtual", "block", "vdb"))
	mustMkdir(t, filepath.Join(broken, "class", "block"))
	mustWrite(t, filepath.Join(broken, "devices", "virtual", "block", "vdb", "size"), "100\n")
	mustSymlink(t, "../../devices/virtual/block/vda", filepath.Join(broken, "class", "block", "vda"))
	mustSymlink(t, "../../devices/virtual/block/vdb", filepath.Join(broken, "class", "block", "vdb"))
	// A queue with a malformed attribute.
	vdc := filepath.Join(broken, "devices", "virtual", "block", "vdc")
	mustMkdir(t, filepath.Join(vdc, "queue"))
	mustWrite(t, filepath.Join(vdc, "size"), "100\n")
	mustWrite(t, filepath.Join(vdc, "queue", "logical_block_size"), "512\n")
	mustWrite(t, filepath.Join(vdc, "queue", "physical_block_size"), "512\n")
	mustWrite(t, filepath.Join(vdc, "queue", "atomic_write_unit_max_bytes"), "lots\n")
	mustSymlink(t, "../../devices/virtual/block/vdc", filepath.Join(broken, "class", "block", "vdc"))

	regular := filepath.Join(t.TempDir(), "file")
	mustWrite(t, regular, "x")

	tests := []struct {
		name   string
		sys    Sysfs
		device string
		is     error // nil: any error
	}{
		{"unknown name", fixture(), "/dev/nvme9n9", ErrNotBlockDevice},
		{"empty", fixture(), "", ErrNotBlockDevice},
		{"no size", Sysfs{Root: broken, ByName: true}, "vda", ErrNotBlockDevice},
		{"no queue", Sysfs{Root: broken, ByName: true}, "vdb", ErrNotBlockDevice},
		{"malformed attribute", Sysfs{Root: broken, ByName: true}, "vdc", nil},
		{"regular file", Sysfs{Root: fixtureRoot}, regular, ErrNotBlockDevice},
		{"directory", Sysfs{Root: fixtureRoot}, t.TempDir(), ErrNotBlockDevice},
		{"missing node", Sysfs{Root: fixtureRoot}, "/dev/does-not-exist-untorn", ErrNotBlockDevice},
		{"missing node is not-exist", Sysfs{Root: fixtureRoot}, "/dev/does-not-exist-untorn", os.ErrNotExist},
		{"char device", Sysfs{}, "/dev/null", ErrNotBlockDevice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.sys.Probe(tt.device)
			if err == nil {
				t.Fatal("Probe succeeded, want an error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Probe error = %v, want %v", err, tt.is)
			}
		})
	}
}

func TestDevRoot(t *testing.T) {
	// A /dev mounted elsewhere: /dev/X is looked up under DevRoot.
	dev := t.TempDir()
	mustWrite(t, filepath.Join(dev, "plain"), "x")
	_, err := Sysfs{Root: fixtureRoot, DevRoot: dev}.Probe("/dev/plain")
	if !errors.Is(err, ErrNotBlockDevice) {
		t.Fatalf("error = %v, want ErrNotBlockDevice", err)
	}
	tests := []struct{ in, want string }{
		{"/dev/plain", filepath.Join(dev, "plain")},
		{"/dev/mapper/vg-lv", filepath.Join(dev, "mapper", "vg-lv")},
		{"/other/node", "/other/node"},
	}
	for _, tt := range tests {
		if got := (Sysfs{DevRoot: dev}).devPath(tt.in); got != tt.want {
			t.Errorf("devPath(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
