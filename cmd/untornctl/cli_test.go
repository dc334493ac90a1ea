package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

const fixtures = "../../pkg/atomic/testdata/sysfs"

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestProbeJSON(t *testing.T) {
	tests := []struct {
		device   string
		hardware bool
		aligned  bool
		fsType   untorn.FSType
		cluster  uint64
		unitMax  uint64
	}{
		{"/dev/nvme0n1", true, true, untorn.FSExt4, 65536, 65536},
		{"/dev/nvme1n1p1", true, true, untorn.FSExt4, 16384, 16384},
		{"/dev/nvme0n1p2", true, true, untorn.FSExt4, 0, 4096}, // only 4 KiB aligned: no bigalloc
		{"/dev/nvme2n1p2", false, false, untorn.FSXFS, 0, untorn.XFSDefaultAtomicMax},
		{"/dev/sdb", true, true, untorn.FSExt4, 32768, 32768},
		{"/dev/sda", false, true, untorn.FSXFS, 0, untorn.XFSDefaultAtomicMax},
		{"/dev/loop0", false, true, untorn.FSXFS, 0, untorn.XFSDefaultAtomicMax},
		{"/dev/mapper/vg0-lv0", true, true, untorn.FSExt4, 65536, 65536},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			code, out, errOut := runCLI("probe", tt.device, "--sysfs-root", fixtures, "--json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var r probeResult
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			rec := r.Recommendation
			if r.HardwareAtomic != tt.hardware || r.Aligned != tt.aligned || rec.FSType != tt.fsType ||
				rec.ClusterSize != tt.cluster || rec.UnitMax != tt.unitMax || rec.Hardware != (tt.fsType == untorn.FSExt4) {
				t.Errorf("probe result %+v", r)
			}
			// Human output exits 0 and names the device.
			code, out, _ = runCLI("probe", "--sysfs-root="+fixtures, tt.device)
			if code != 0 || !strings.Contains(out, tt.device) {
				t.Errorf("human probe exit %d:\n%s", code, out)
			}
		})
	}
}

func TestPlanJSON(t *testing.T) {
	code, out, errOut := runCLI("plan", "/dev/nvme0n1", "--fs", "ext4", "--unit", "16Ki", "--sysfs-root", fixtures, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fsType", "mkfsArgs", "mountOptions", "atomicUnitMin", "atomicUnitMax"} {
		if _, ok := m[k]; !ok {
			t.Errorf("plan JSON lacks %q:\n%s", k, out)
		}
	}
	var p untorn.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	want := []string{"-F", "-b", "4096", "-O", "bigalloc", "-C", "65536", "/dev/nvme0n1"}
	if strings.Join(p.MkfsArgs, " ") != strings.Join(want, " ") || p.AtomicUnitMin != 4096 || p.AtomicUnitMax != 65536 {
		t.Errorf("plan %+v", p)
	}
	// The human form is the exact command.
	_, out, _ = runCLI("plan", "/dev/nvme0n1", "--fs=ext4", "--unit=16Ki", "--cluster=32Ki", "--sysfs-root", fixtures)
	if first := strings.SplitN(out, "\n", 2)[0]; first != "mkfs.ext4 -F -b 4096 -O bigalloc -C 32768 /dev/nvme0n1" {
		t.Errorf("human plan first line %q", first)
	}
	// prefer falls back and exits 0.
	code, out, _ = runCLI("plan", "/dev/loop0", "--fs", "ext4", "--unit", "16Ki", "--policy", "prefer", "--sysfs-root", fixtures, "--json")
	if err := json.Unmarshal([]byte(out), &p); code != 0 || err != nil || p.Atomic || p.Reason == "" {
		t.Errorf("prefer plan exit %d: %+v", code, p)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := [][]string{
		{},
		{"frobnicate"},
		{"probe"},
		{"probe", "/dev/a", "/dev/b", "--sysfs-root", fixtures},
		{"probe", "/dev/nvme9n9", "--sysfs-root", fixtures},
		{"probe", "/dev/nvme0n1", "--bogus"},
		{"plan", "/dev/nvme0n1", "--sysfs-root", fixtures},
		{"plan", "/dev/nvme0n1", "--fs", "zfs", "--unit", "16Ki", "--sysfs-root", fixtures},
		{"plan", "/dev/nvme0n1", "--fs", "ext4", "--unit", "16KB", "--sysfs-root", fixtures},
		{"plan", "/dev/nvme0n1", "--fs", "ext4", "--unit", "16Ki", "--cluster", "-1", "--sysfs-root", fixtures},
		{"plan", "/dev/nvme0n1", "--fs", "ext4", "--unit", "16Ki", "--policy", "maybe", "--sysfs-root", fixtures},
		{"plan", "/dev/loop0", "--fs", "ext4", "--unit", "16Ki", "--sysfs-root", fixtures},     // require fails
		{"plan", "/dev/nvme0n1", "--fs", "ext4", "--unit", "12Ki", "--sysfs-root", fixtures},   // not a power of two
		{"plan", "/dev/nvme2n1p2", "--fs", "ext4", "--unit", "16Ki", "--sysfs-root", fixtures}, // misaligned
		{"plan", "/dev/nvme1n1", "--fs", "ext4", "--unit", "64Ki", "--sysfs-root", fixtures},   // above hardware max
		{"verify"},
		{"verify", "/", "--unit", "3Ki"},
		{"verify", "/", "--unit", "nope"},
		{"verify", "/nonexistent-untorn-dir"},
	}
	for _, args := range tests {
		code, out, errOut := runCLI(args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s%s", args, code, exitUsage, out, errOut)
		}
		if errOut == "" {
			t.Errorf("%q: no message on stderr", args)
		}
	}
	if code, out, _ := runCLI("help"); code != 0 || !strings.Contains(out, "untornctl verify") {
		t.Errorf("help: exit %d", code)
	}
}
