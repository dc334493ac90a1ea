package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"
)

// pvsExec answers n pvs calls with the mixed volume group's report.
func pvsExec(b *testing.B, n int) *testingexec.FakeExec {
	out, err := os.ReadFile(filepath.Join("testdata", "lvm", "pvs-mixed.out"))
	if err != nil {
		b.Fatal(err)
	}
	fe := &testingexec.FakeExec{}
	for i := 0; i < n; i++ {
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
			fc := &testingexec.FakeCmd{RunScript: []testingexec.FakeAction{func() ([]byte, []byte, error) { return out, nil, nil }}}
			return testingexec.InitFakeCmd(fc, cmd, args...)
		})
	}
	return fe
}

func benchCapacity(b *testing.B, backend Backend, fe exec.Interface, uncached bool) {
	dir := b.TempDir()
	d, err := New(Options{
		Mode: ModeAll, Endpoint: "unix://" + dir + "/csi.sock", NodeID: "node-1", Backend: backend.Name(), VolumeGroup: "vg0",
		LoopDir: dir, SysfsRoot: "/sys", StateDir: dir + "/state", ShimDir: dir + "/shim",
	}, Deps{Backend: backend, Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fe), Exec: fe,
		Atomic: &modelAtomic{sysfs: fixtureSysfs(b)}})
	if err != nil {
		b.Fatal(err)
	}
	req := &csi.GetCapacityRequest{Parameters: map[string]string{"fsType": "ext4", "atomicWriteUnit": "16Ki"},
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: "node-1"}}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if uncached {
			d.placer = newPlacer()
		}
		if _, err := d.GetCapacity(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetCapacityLVM: GetCapacity of an ext4 16Ki class on a volume
// group of four PVs, probes cached; the pvs command is answered in memory
// (on a real node its run, a fork and exec of lvm, comes on top).
func BenchmarkGetCapacityLVM(b *testing.B) {
	fe := pvsExec(b, b.N+1)
	benchCapacity(b, NewLVMBackend("vg0", fe), fe, false)
}

// BenchmarkGetCapacityLVMUncached: the same, probing the four PVs' sysfs
// on every call (what the cache saves).
func BenchmarkGetCapacityLVMUncached(b *testing.B) {
	fe := pvsExec(b, b.N+1)
	benchCapacity(b, NewLVMBackend("vg0", fe), fe, true)
}

// BenchmarkGetCapacityLoop: GetCapacity of an ext4 16Ki class on the loop
// backend over a real directory (statfs and the records).
func BenchmarkGetCapacityLoop(b *testing.B) {
	dir := b.TempDir()
	fe := &testingexec.FakeExec{}
	benchCapacity(b, NewLoopBackend(dir, 0, fe), fe, false)
}
