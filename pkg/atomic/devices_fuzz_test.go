package atomic

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sysfsAttrs are the attributes FuzzProbe writes, in the order of its
// arguments. Each is written when its bit in the presence mask is set.
var sysfsAttrs = []struct {
	path     string // relative to the disk's directory; part/ is the partition
	required bool
	pow2     bool   // 0 or a power of two
	min      uint64 // least accepted non-missing value
	sectors  bool   // a sector count whose byte size must fit 64 bits
}{
	{path: "queue/atomic_write_unit_min_bytes", pow2: true},
	{path: "queue/atomic_write_unit_max_bytes", pow2: true},
	{path: "queue/atomic_write_max_bytes"},
	{path: "queue/atomic_write_boundary_bytes", pow2: true},
	{path: "queue/logical_block_size", required: true, pow2: true, min: 512},
	{path: "queue/physical_block_size", required: true, pow2: true, min: 512},
	{path: "size", required: true, sectors: true},
	{path: "part/start", required: true, sectors: true},
}

// FuzzProbe writes arbitrary contents into a sysfs tree (a disk "fz" with a
// partition "fz1") and probes the disk or the partition. Invariants: no
// panic; Probe fails exactly when an attribute is missing where required,
// is not a decimal number, or breaks a kernel rule (unit min/max/boundary 0
// or a power of two, min <= max, block sizes powers of two >= 512, byte
// sizes that fit); an accepted probe reports the values written; the
// planner takes any accepted limits without panicking.
func FuzzProbe(f *testing.F) {
	f.Add("4096\n", "65536\n", "65536\n", "0\n", "4096\n", "4096\n", "2097152\n", "2048\n", uint8(0xff), false)
	f.Add("512\n", "16384\n", "16384\n", "131072\n", "512\n", "512\n", "4194304\n", "2056\n", uint8(0xff), true)
	f.Add("", "", "", "", "512\n", "512\n", "2097152\n", "0\n", uint8(0xf0), true)
	f.Add("0\n", "0\n", "0\n", "0\n", "512\n", "4096\n", "1\n", "63\n", uint8(0xff), true)
	f.Add("65536\n", "4096\n", "4096\n", "0\n", "4096\n", "4096\n", "8\n", "8\n", uint8(0xff), false)
	f.Add("3000", "-1", "x", "1e3", "511", "0", "36028797018963968", "18446744073709551615", uint8(0xff), true)
	f.Add(" 4096 ", "\t8192\n\n", "8192", "8192", "4096", "4096", "36028797018963967", "0", uint8(0x7f), true)
	root := f.TempDir()
	disk := filepath.Join(root, "devices", "virtual", "block", "fz")
	if err := os.MkdirAll(filepath.Join(disk, "queue"), 0o755); err != nil {
		f.Fatal(err)
	}
	part := filepath.Join(disk, "fz1")
	if err := os.MkdirAll(part, 0o755); err != nil {
		f.Fatal(err)
	}
	for name, content := range map[string]string{"partition": "1\n", "size": "2048\n"} {
		if err := os.WriteFile(filepath.Join(part, name), []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "class", "block"), 0o755); err != nil {
		f.Fatal(err)
	}
	for name, dir := range map[string]string{"fz": disk, "fz1": part} {
		if err := os.Symlink(dir, filepath.Join(root, "class", "block", name)); err != nil {
			f.Fatal(err)
		}
	}
	sys := Sysfs{Root: root, ByName: true}

	f.Fuzz(func(t *testing.T, umin, umax, maxBytes, boundary, lbs, pbs, size, start string, present uint8, probePart bool) {
		contents := []string{umin, umax, maxBytes, boundary, lbs, pbs, size, start}
		values := make([]uint64, len(contents))
		valid := true
		for i, a := range sysfsAttrs {
			p := filepath.Join(disk, a.path)
			if strings.HasPrefix(a.path, "part/") {
				p = filepath.Join(part, strings.TrimPrefix(a.path, "part/"))
			}
			os.Remove(p)
			// The disk's size is read only when the disk is probed (a
			// partition has its own size); the partition's start only when
			// the partition is probed.
			unread := (a.path == "part/start" && !probePart) || (a.path == "size" && probePart)
			if present&(1<<i) == 0 {
				if a.required && !unread {
					valid = false
				}
				continue
			}
			if err := os.WriteFile(p, []byte(contents[i]), 0o644); err != nil {
				t.Fatal(err)
			}
			if unread {
				continue
			}
			v, err := strconv.ParseUint(strings.TrimSpace(contents[i]), 10, 64)
			switch {
			case err != nil:
				valid = false
			case a.pow2 && (v != 0 || a.required) && !isPowerOfTwo(v), v < a.min,
				a.sectors && v > math.MaxUint64/512:
				valid = false
			}
			values[i] = v
		}
		if values[0] != 0 && values[1] != 0 && values[0] > values[1] {
			valid = false
		}
		dev := "/dev/fz"
		if probePart {
			dev = "/dev/fz1"
		}
		d, err := sys.Probe(dev)
		if (err == nil) != valid {
			t.Fatalf("Probe(%s) over %q (present %08b): err = %v, want valid = %v", dev, contents, present, err, valid)
		}
		if err != nil {
			return
		}
		want := DeviceLimits{Device: dev, Name: "fz", Disk: "fz", UnitMin: values[0], UnitMax: values[1], MaxBytes: values[2],
			Boundary: values[3], LogicalBlockSize: values[4], PhysicalBlockSize: values[5], SizeBytes: values[6] * 512}
		if probePart {
			want.Name, want.Partition, want.StartSector, want.SizeBytes = "fz1", true, values[7], 2048*512
		}
		if d.Device != want.Device || d.Name != want.Name || d.Disk != want.Disk || d.Partition != want.Partition ||
			d.StartSector != want.StartSector || d.UnitMin != want.UnitMin || d.UnitMax != want.UnitMax ||
			d.MaxBytes != want.MaxBytes || d.Boundary != want.Boundary || d.LogicalBlockSize != want.LogicalBlockSize ||
			d.PhysicalBlockSize != want.PhysicalBlockSize || d.SizeBytes != want.SizeBytes {
			t.Fatalf("Probe(%s) over %q = %+v, want %+v", dev, contents, d, want)
		}
		if d.HardwareAtomic() && (d.UnitMin == 0 || d.UnitMin > d.UnitMax || !d.AlignedTo(d.RequiredAlignment())) {
			t.Fatalf("HardwareAtomic with limits %+v", d)
		}
		if d.StartBytes()/512 != d.StartSector {
			t.Fatalf("start %d sectors overflows to %d bytes", d.StartSector, d.StartBytes())
		}
		for _, fs := range []FSType{FSExt4, FSXFS} {
			p, err := PlanFormat(d, PlanRequest{FSType: fs, Unit: 16 << 10, Policy: PolicyPrefer}, dev)
			if err != nil {
				t.Fatalf("PlanFormat(%s) on accepted limits %+v: %v", fs, d, err)
			}
			if fs == FSExt4 && p.Atomic && (!d.HardwareAtomic() || p.AtomicUnitMax > d.UnitMax) {
				t.Fatalf("ext4 plan %+v on limits %+v", p, d)
			}
		}
	})
}
