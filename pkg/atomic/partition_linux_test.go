package atomic

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

// partitionedLoop writes an MBR with one partition per start sector
// (2048 sectors each) into a sparse image, attaches it with partition
// scanning and returns the disk device. It is detached at cleanup.
func partitionedLoop(t *testing.T, starts ...uint32) string {
	t.Helper()
	testutil.RequireRoot(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	mbr := make([]byte, 512)
	for i, start := range starts {
		e := mbr[446+16*i:]
		e[4] = 0x83 // Linux
		binary.LittleEndian.PutUint32(e[8:], start)
		binary.LittleEndian.PutUint32(e[12:], 2048)
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	if err := os.WriteFile(img, mbr, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(testutil.Run(t, "losetup", "--find", "--show", "--partscan", img))
	t.Cleanup(func() {
		testutil.Output("partx", "-d", dev)
		for i := 0; i < 50; i++ {
			if _, err := testutil.Output("losetup", "-d", dev); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not detach %s", dev)
	})
	// Add the partitions through BLKPG too: kernels built without the
	// MBR parser do not find them when scanning.
	testutil.Run(t, "partx", "-u", dev)
	return dev
}

// TestProbeRealPartitions checks the sysfs layout assumptions against the
// running kernel: partitions of a real (loop) disk.
func TestProbeRealPartitions(t *testing.T) {
	disk := partitionedLoop(t, 2048, 4097)
	tests := []struct {
		dev     string
		start   uint64
		aligned bool // to 1 MiB
	}{
		{disk + "p1", 2048, true},
		{disk + "p2", 4097, false},
	}
	for _, tt := range tests {
		var d DeviceLimits
		var err error
		// udev may create the partition nodes a moment after the scan.
		for i := 0; i < 50; i++ {
			if d, err = (Sysfs{}).Probe(tt.dev); !errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("Probe(%s): %v", tt.dev, err)
		}
		if !d.Partition || d.StartSector != tt.start || d.Disk != filepath.Base(disk) ||
			d.Name != filepath.Base(tt.dev) || d.SizeBytes != 2048*512 || d.LogicalBlockSize == 0 {
			t.Errorf("Probe(%s) = %+v", tt.dev, d)
		}
		if d.AlignedTo(1<<20) != tt.aligned || d.HardwareAtomic() {
			t.Errorf("%s: aligned to 1 MiB %v, hardware %v", tt.dev, d.AlignedTo(1<<20), d.HardwareAtomic())
		}
		// The same directory by name, as untornctl --sysfs-root /sys does.
		byName, err := Sysfs{Root: "/sys", ByName: true}.Probe(tt.dev)
		if err != nil || byName.StartSector != d.StartSector || byName.Disk != d.Disk {
			t.Errorf("by name: %+v, %v", byName, err)
		}
	}
}
