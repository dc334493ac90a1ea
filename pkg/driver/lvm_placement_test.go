package driver

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"
)

// lvmModel answers the lvm2 commands the driver runs on a volume group
// over the PVs of testdata/lvm/pvs-mixed.out (nvme0n1 4Ki..64Ki, nvme1n1
// 512B..16Ki, loop0 without atomic writes, nvme2n1p2 misaligned): pvs from
// the recording, lvs from the LVs lvcreate made, and it logs every command.
type lvmModel struct {
	t    *testing.T
	argv [][]string
	lvs  map[string][]string // LV name -> tags
	size map[string]string   // LV name -> size in bytes
}

func (m *lvmModel) exec(calls int) *testingexec.FakeExec {
	fe := &testingexec.FakeExec{}
	for i := 0; i < calls; i++ {
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
			m.argv = append(m.argv, append([]string{cmd}, args...))
			fc := &testingexec.FakeCmd{}
			fc.RunScript = []testingexec.FakeAction{func() ([]byte, []byte, error) {
				checkLVMEnv(m.t, fc.Env)
				return m.answer(cmd, args)
			}}
			return testingexec.InitFakeCmd(fc, cmd, args...)
		})
	}
	return fe
}

func (m *lvmModel) answer(cmd string, args []string) ([]byte, []byte, error) {
	switch cmd {
	case "pvs":
		return readLVMRec(m.t, "pvs-mixed", "out"), nil, nil
	case "lvcreate":
		name := args[slices.Index(args, "-n")+1]
		var tags []string
		for i, a := range args {
			if a == "--addtag" {
				tags = append(tags, args[i+1])
			}
		}
		m.lvs[name] = tags
		m.size[name] = strings.TrimSuffix(args[slices.Index(args, "-L")+1], "b")
		return nil, nil, nil
	case "lvextend":
		_, name, _ := strings.Cut(args[2], "/")
		m.size[name] = strings.TrimSuffix(args[1], "b")
		return nil, nil, nil
	case "lvs":
		target := args[len(args)-1]
		_, name, _ := strings.Cut(target, "/")
		tags, ok := m.lvs[name]
		if !ok {
			return nil, readLVMRec(m.t, "lvs-missing", "txt"), testingexec.FakeExitError{Status: 5}
		}
		row := lvRow{Name: name, Size: m.size[name], Attr: "-wi-a-----", Path: "/dev/vg0/" + name,
			DMPath: "/dev/mapper/vg0-" + strings.ReplaceAll(name, "-", "--"), Tags: strings.Join(tags, ",")}
		out, err := json.Marshal(map[string]any{"report": []map[string]any{{"lv": []lvRow{row}}}})
		return out, nil, err
	}
	m.t.Errorf("unexpected command %s %q", cmd, args)
	return nil, nil, nil
}

func (m *lvmModel) ran(cmd string) [][]string {
	var out [][]string
	for _, a := range m.argv {
		if a[0] == cmd {
			out = append(out, a)
		}
	}
	return out
}

// TestLVMPlacesOnCapablePVs: on a volume group over PVs with different
// atomic limits, GetCapacity counts only the PVs that can give the class
// its unit, CreateVolume puts the LV on those PVs only (lvcreate ... vg0
// PV...), and a class no PV can serve is ResourceExhausted without any
// lvcreate.
func TestLVMPlacesOnCapablePVs(t *testing.T) {
	const (
		nvme0 = int64(8589934592) // pv_free of each PV in pvs-mixed.out
		nvme1 = int64(4294967296)
		loop0 = int64(2147483648)
		nvme2 = int64(1071644672)
	)
	tests := []struct {
		name     string
		params   map[string]string
		capacity int64
		pvs      []string // lvcreate's PV list; nil: any PV of the VG
		refused  bool
	}{
		{"ext4 64Ki", map[string]string{"fsType": "ext4", "atomicWriteUnit": "64Ki"}, nvme0, []string{"/dev/nvme0n1"}, false},
		{"ext4 16Ki", map[string]string{"fsType": "ext4", "atomicWriteUnit": "16Ki"}, nvme0 + nvme1, []string{"/dev/nvme0n1", "/dev/nvme1n1"}, false},
		{"ext4 128Ki", map[string]string{"fsType": "ext4", "atomicWriteUnit": "128Ki"}, 0, nil, true},
		{"ext4 64Ki prefer", map[string]string{"fsType": "ext4", "atomicWriteUnit": "64Ki", "atomicPolicy": "prefer"},
			nvme0 + nvme1 + loop0 + nvme2, []string{"/dev/nvme0n1"}, false},
		{"ext4 128Ki prefer", map[string]string{"fsType": "ext4", "atomicWriteUnit": "128Ki", "atomicPolicy": "prefer"},
			nvme0 + nvme1 + loop0 + nvme2, nil, false},
		{"xfs 64Ki", map[string]string{"fsType": "xfs", "atomicWriteUnit": "64Ki"}, nvme0 + nvme1 + loop0 + nvme2, nil, false},
		{"xfs 64Ki hardware", map[string]string{"fsType": "xfs", "atomicWriteUnit": "64Ki", "atomicSource": "hardware"}, nvme0, []string{"/dev/nvme0n1"}, false},
		{"xfs 16Ki hardware", map[string]string{"fsType": "xfs", "atomicWriteUnit": "16Ki", "atomicSource": "hardware"}, nvme0 + nvme1, []string{"/dev/nvme0n1", "/dev/nvme1n1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, m := newLVMModelDriver(t)
			ctx := context.Background()
			r, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: tc.params})
			if err != nil || r.GetAvailableCapacity() != tc.capacity {
				t.Fatalf("GetCapacity = %d, %v; want %d", r.GetAvailableCapacity(), err, tc.capacity)
			}
			_, err = d.CreateVolume(ctx, createReq("pvc-1", 1<<30, tc.params))
			creates := m.ran("lvcreate")
			if tc.refused {
				if status.Code(err) != codes.ResourceExhausted || len(creates) != 0 {
					t.Fatalf("CreateVolume: %v after %d lvcreate; want ResourceExhausted and none", err, len(creates))
				}
				return
			}
			if err != nil || len(creates) != 1 {
				t.Fatalf("CreateVolume: %v after %d lvcreate", err, len(creates))
			}
			args := creates[0]
			i := slices.Index(args, "vg0")
			if got := args[i+1:]; !slices.Equal(got, tc.pvs) && !(len(got) == 0 && tc.pvs == nil) {
				t.Errorf("lvcreate places the LV on %q, want %q (%q)", got, tc.pvs, args)
			}
		})
	}
}

// newLVMModelDriver is a driver (controller and node) on the LVM backend
// over volume group vg0, its commands answered by a new lvmModel and its
// atomic limits read from the sysfs fixture.
func newLVMModelDriver(t *testing.T) (*Driver, *lvmModel) {
	t.Helper()
	m := &lvmModel{t: t, lvs: map[string][]string{}, size: map[string]string{}}
	fe := m.exec(16)
	dir := t.TempDir()
	d, err := New(Options{
		Mode: ModeAll, Endpoint: "unix://" + dir + "/csi.sock", NodeID: "node-1", Backend: "lvm", VolumeGroup: "vg0",
		SysfsRoot: "/sys", StateDir: dir + "/state", ShimDir: dir + "/shim",
	}, Deps{Backend: NewLVMBackend("vg0", fe), Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fe),
		Exec: fe, Atomic: &modelAtomic{sysfs: fixtureSysfs(t)}})
	if err != nil {
		t.Fatal(err)
	}
	return d, m
}

// TestLVMExpandStaysOnCapablePVs: growing an LV of a class only some PVs
// can serve extends it onto those PVs only (lvextend ... PV...).
func TestLVMExpandStaysOnCapablePVs(t *testing.T) {
	d, m := newLVMModelDriver(t)
	ctx := context.Background()
	resp, err := d.CreateVolume(ctx, createReq("pvc-1", 1<<30, map[string]string{"fsType": "ext4", "atomicWriteUnit": "64Ki"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}}); err != nil {
		t.Fatal(err)
	}
	ext := m.ran("lvextend")
	if len(ext) != 1 || !slices.Equal(ext[0][4:], []string{"/dev/nvme0n1"}) {
		t.Errorf("lvextend %q, want it on /dev/nvme0n1 only", ext)
	}
}
