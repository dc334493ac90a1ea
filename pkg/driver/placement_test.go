package driver

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	testingexec "k8s.io/utils/exec/testing"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// fixtureSysfs is pkg/atomic's sysfs fixture tree: NVMe 4Ki..64Ki
// (nvme0n1), 512B..16Ki (nvme1n1), a misaligned partition (nvme2n1p2), a
// loop device without atomic writes (loop0).
func fixtureSysfs(t testing.TB) untorn.Sysfs {
	root, err := filepath.Abs(filepath.Join("..", "atomic", "testdata", "sysfs"))
	if err != nil {
		t.Fatal(err)
	}
	return untorn.Sysfs{Root: root, ByName: true}
}

// modelAtomic probes the sysfs fixtures, plans with the real planner and
// verifies as the kernel would on the device probed last: ext4 atomic only
// in hardware, XFS atomic always, in hardware where the device can.
type modelAtomic struct {
	sysfs  untorn.Sysfs
	mu     sync.Mutex
	last   untorn.DeviceLimits
	probes int
}

func (m *modelAtomic) Probe(dev string) (untorn.DeviceLimits, error) {
	l, err := m.sysfs.Probe(dev)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.probes = l, m.probes+1
	return l, err
}

func (m *modelAtomic) Plan(dev untorn.DeviceLimits, req untorn.PlanRequest, device string) (untorn.Plan, error) {
	return untorn.PlanFormat(dev, req, device)
}

func (m *modelAtomic) Verify(_ string, unit uint64) (untorn.Verification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := untorn.Verification{Unit: unit}
	ext4, err := untorn.PlanFormat(m.last, untorn.PlanRequest{FSType: untorn.FSExt4, Unit: unit, Policy: untorn.PolicyRequire}, "/dev/x")
	if err == nil {
		v.Atomic, v.Hardware, v.UnitMin, v.UnitMax = true, true, uint32(ext4.AtomicUnitMin), uint32(ext4.AtomicUnitMax)
	} else {
		v.Reason = err.Error()
	}
	return v, nil
}

func (m *modelAtomic) SetCoWExtSize(string, uint64) (bool, error) { return false, nil }

// xfsModel verifies as XFS: atomic everywhere, in hardware where planXFS says so.
type xfsModel struct{ *modelAtomic }

func (m xfsModel) Verify(_ string, unit uint64) (untorn.Verification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := untorn.PlanFormat(m.last, untorn.PlanRequest{FSType: untorn.FSXFS, Unit: unit, Policy: untorn.PolicyRequire}, "/dev/x")
	if err != nil {
		return untorn.Verification{}, err
	}
	return untorn.Verification{Atomic: true, Hardware: p.Hardware, UnitMin: 4096, UnitMax: 1 << 20, Unit: unit}, nil
}

// spacedBackend is fakeBackend with devices: volumes are placed on the
// devices CreateOn names (the first device otherwise), and Attach returns
// the device a volume was placed on.
type spacedBackend struct {
	*fakeBackend
	spaces   []DeviceSpace
	placedOn map[string][]string
	creates  int
}

func (b *spacedBackend) Spaces(context.Context) ([]DeviceSpace, error) { return b.spaces, nil }

func (b *spacedBackend) Create(ctx context.Context, id string, size int64, meta map[string]string) (BackendVolume, error) {
	return b.CreateOn(ctx, id, size, meta, nil)
}

func (b *spacedBackend) CreateOn(ctx context.Context, id string, size int64, meta map[string]string, devs []string) (BackendVolume, error) {
	b.creates++
	if devs == nil {
		devs = devices(b.spaces)
	}
	b.placedOn[id] = devs
	return b.fakeBackend.Create(ctx, id, size, meta)
}

func (b *spacedBackend) ExpandOn(ctx context.Context, id string, size int64, devs []string) (BackendVolume, error) {
	b.placedOn[id] = append(b.placedOn[id], devs...)
	return b.fakeBackend.Expand(ctx, id, size)
}

func (b *spacedBackend) Attach(ctx context.Context, id string) (string, error) {
	if _, err := b.Get(ctx, id); err != nil {
		return "", err
	}
	return b.placedOn[id][0], nil
}

// newSpacedDriver builds a driver on a spacedBackend over spaces and the
// sysfs fixtures; xfs selects the XFS verification model.
func newSpacedDriver(t *testing.T, spaces []DeviceSpace, xfs bool) (*fakeEnv, *spacedBackend, *modelAtomic) {
	t.Helper()
	e := &fakeEnv{backend: newFakeBackend(), mounter: mount.NewFakeMounter(nil), exec: &testingexec.FakeExec{}, dir: t.TempDir()}
	sb := &spacedBackend{fakeBackend: e.backend, spaces: spaces, placedOn: map[string][]string{}}
	m := &modelAtomic{sysfs: fixtureSysfs(t)}
	var ops AtomicOps = m
	if xfs {
		ops = xfsModel{m}
	}
	d, err := New(Options{
		Mode: ModeAll, Endpoint: "unix://" + e.dir + "/csi.sock", NodeID: "node-1", Backend: "loop",
		LoopDir: e.dir + "/loop", SysfsRoot: "/sys", StateDir: e.dir + "/state", ShimDir: e.dir + "/shim",
	}, Deps{Backend: sb, Mounter: mount.NewSafeFormatAndMount(e.mounter, e.exec), Exec: e.exec, Atomic: ops})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e, sb, m
}

func lvmSpace(dev string, free int64) DeviceSpace {
	return DeviceSpace{Device: dev, FreeBytes: free, SizeBytes: 64 << 30, Offset: 1 << 20, Step: 4 << 20}
}

type placementClass struct {
	name   string
	params map[string]string
}

func placementClasses() []placementClass {
	var cs []placementClass
	for _, u := range []string{"8Ki", "16Ki", "64Ki", "128Ki"} {
		for _, p := range []string{"require", "prefer"} {
			cs = append(cs, placementClass{"ext4-" + u + "-" + p, map[string]string{"fsType": "ext4", "atomicWriteUnit": u, "atomicPolicy": p}})
		}
	}
	for _, u := range []string{"16Ki", "64Ki"} {
		cs = append(cs, placementClass{"xfs-" + u, map[string]string{"fsType": "xfs", "atomicWriteUnit": u}})
		for _, p := range []string{"require", "prefer"} {
			cs = append(cs, placementClass{"xfs-" + u + "-hardware-" + p,
				map[string]string{"fsType": "xfs", "atomicWriteUnit": u, "atomicSource": "hardware", "atomicPolicy": p}})
		}
	}
	return cs
}

// TestPlacementAgrees: for each fixture device and class, GetCapacity,
// CreateVolume and NodeStageVolume agree. Where capacity is 0,
// CreateVolume is ResourceExhausted and nothing is created; where it is
// positive, the volume is created and staged, atomic (in hardware when the
// class asks for it) under require.
func TestPlacementAgrees(t *testing.T) {
	devs := []struct {
		name, dev string
		fits      []string // the require classes with capacity here
	}{
		{"nvme 4Ki..64Ki", "/dev/nvme0n1", []string{"ext4-8Ki-require", "ext4-16Ki-require", "ext4-64Ki-require",
			"xfs-16Ki", "xfs-64Ki", "xfs-16Ki-hardware-require", "xfs-64Ki-hardware-require"}},
		{"nvme 512B..16Ki", "/dev/nvme1n1", []string{"ext4-8Ki-require", "ext4-16Ki-require",
			"xfs-16Ki", "xfs-64Ki", "xfs-16Ki-hardware-require"}},
		{"no atomics", "/dev/loop0", []string{"xfs-16Ki", "xfs-64Ki"}},
		{"misaligned partition", "/dev/nvme2n1p2", []string{"xfs-16Ki", "xfs-64Ki"}},
	}
	const free = 10 << 30
	for _, dv := range devs {
		for _, c := range placementClasses() {
			t.Run(dv.name+"/"+c.name, func(t *testing.T) {
				spec, err := specOf(c.params)
				if err != nil {
					t.Fatal(err)
				}
				e, sb, _ := newSpacedDriver(t, []DeviceSpace{lvmSpace(dv.dev, free)}, spec.FSType == untorn.FSXFS)
				ctx := context.Background()
				capResp, err := e.d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: c.params,
					AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: "node-1", AtomicTopologyPrefix + "16Ki": "hardware"}}})
				if err != nil {
					t.Fatal(err)
				}
				want := int64(0)
				if spec.Policy == untorn.PolicyPrefer || slices.Contains(dv.fits, c.name) {
					want = free
				}
				if got := capResp.GetAvailableCapacity(); got != want {
					t.Fatalf("GetCapacity = %d, want %d", got, want)
				}
				resp, err := e.d.CreateVolume(ctx, createReq("vol", 1<<30, c.params))
				if want == 0 {
					if status.Code(err) != codes.ResourceExhausted {
						t.Fatalf("CreateVolume: code %v, want ResourceExhausted (%v)", status.Code(err), err)
					}
					if sb.creates != 0 || len(e.backend.vols) != 0 {
						t.Errorf("a refused CreateVolume created %d volumes", len(e.backend.vols))
					}
					return
				}
				if err != nil {
					t.Fatalf("CreateVolume: %v", err)
				}
				id := resp.GetVolume().GetVolumeId()
				scriptFormat(e)
				staging := filepath.Join(e.dir, "staging")
				_, err = e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")})
				if err != nil {
					t.Fatalf("NodeStageVolume: %v", err)
				}
				st, _, _ := e.d.state.get(id)
				if spec.Policy == untorn.PolicyRequire && (!st.Verified.Atomic || spec.Source == untorn.SourceHardware && !st.Hardware) {
					t.Errorf("staged volume verified %+v, hardware %v", st.Verified, st.Hardware)
				}
			})
		}
	}
}

// TestNodeStageRefusesSoftwareForHardwareClass: a volume of an XFS class
// with atomicSource hardware on a device without hardware atomic writes
// (made before the device changed) fails staging under require, after the
// filesystem showed only software atomic writes, and is unmounted again.
func TestNodeStageRefusesSoftwareForHardwareClass(t *testing.T) {
	e, sb, _ := newSpacedDriver(t, []DeviceSpace{lvmSpace("/dev/nvme0n1", 10<<30)}, true)
	ctx := context.Background()
	params := map[string]string{"fsType": "xfs", "atomicWriteUnit": "16Ki", "atomicSource": "hardware"}
	resp, err := e.d.CreateVolume(ctx, createReq("vol", 1<<30, params))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	// The device it sits on has no hardware atomic writes any more.
	sb.placedOn[id] = []string{"/dev/loop0"}
	scriptFormat(e)
	staging := filepath.Join(e.dir, "staging")
	_, err = e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
	}
	if ok, _ := e.mounter.IsMountPoint(staging); ok {
		t.Error("staging path left mounted")
	}
}

// TestGetCapacityPerClassTopology: a request for another node is 0; one carrying
// this node's atomic unit keys counts; the device is probed once for all
// calls (the cache); a bad parameter is InvalidArgument.
func TestGetCapacityPerClassTopology(t *testing.T) {
	e, _, m := newSpacedDriver(t, []DeviceSpace{lvmSpace("/dev/nvme0n1", 5<<30)}, false)
	params := map[string]string{"fsType": "ext4", "atomicWriteUnit": "16Ki"}
	for _, tc := range []struct {
		segs map[string]string
		want int64
	}{
		{map[string]string{TopologyKey: "node-2"}, 0},
		{map[string]string{TopologyKey: "node-1"}, 5 << 30},
		{map[string]string{TopologyKey: "node-1", AtomicTopologyPrefix + "64Ki": "hardware"}, 5 << 30},
	} {
		r, err := e.d.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: params, AccessibleTopology: &csi.Topology{Segments: tc.segs}})
		if err != nil || r.GetAvailableCapacity() != tc.want {
			t.Errorf("%v: capacity %d, %v; want %d", tc.segs, r.GetAvailableCapacity(), err, tc.want)
		}
	}
	if m.probes != 1 {
		t.Errorf("device probed %d times, want once", m.probes)
	}
	r, err := e.d.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: map[string]string{"atomicSource": "software"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad atomicSource: %v, %v; want InvalidArgument", r, err)
	}
}

// TestNodeGetInfoAtomicTopology: the node publishes one segment per unit
// its devices give in hardware, the value never anything but "hardware";
// volumes carry the node key only; CreateVolume accepts a requisite
// topology with the extra keys.
func TestNodeGetInfoAtomicTopology(t *testing.T) {
	tests := []struct {
		name  string
		devs  []string
		units []string
	}{
		{"nvme 4Ki..64Ki", []string{"/dev/nvme0n1"}, []string{"4Ki", "8Ki", "16Ki", "32Ki", "64Ki"}},
		{"nvme 512B..16Ki", []string{"/dev/nvme1n1"}, []string{"4Ki", "8Ki", "16Ki"}},
		{"no atomics", []string{"/dev/loop0"}, nil},
		{"misaligned partition", []string{"/dev/nvme2n1p2"}, nil},
		{"mixed", []string{"/dev/loop0", "/dev/nvme1n1"}, []string{"4Ki", "8Ki", "16Ki"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var spaces []DeviceSpace
			for _, d := range tc.devs {
				spaces = append(spaces, lvmSpace(d, 1<<30))
			}
			e, _, m := newSpacedDriver(t, spaces, false)
			info, err := e.d.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{TopologyKey: "node-1"}
			for _, u := range tc.units {
				want[AtomicTopologyPrefix+u] = "hardware"
			}
			if got := info.GetAccessibleTopology().GetSegments(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("topology %v, want %v", got, want)
			}
			// Worked out once: a second call probes nothing.
			probes := m.probes
			if _, err := e.d.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{}); err != nil || m.probes != probes {
				t.Errorf("second NodeGetInfo probed %d more times (%v)", m.probes-probes, err)
			}
			req := createReq("vol", 1<<30, map[string]string{"fsType": "xfs"})
			req.AccessibilityRequirements = &csi.TopologyRequirement{Requisite: []*csi.Topology{info.GetAccessibleTopology()}}
			resp, err := e.d.CreateVolume(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetVolume().GetAccessibleTopology(); len(got) != 1 || fmt.Sprint(got[0].GetSegments()) != fmt.Sprint(map[string]string{TopologyKey: "node-1"}) {
				t.Errorf("volume topology %v, want the node key only", got)
			}
		})
	}
}

// TestNodeHealthHardwareLost: a staged volume of an atomicSource hardware
// class whose atomic writes now verify only in software is DEGRADED.
func TestNodeHealthHardwareLost(t *testing.T) {
	e, _, m := newSpacedDriver(t, []DeviceSpace{lvmSpace("/dev/nvme0n1", 10<<30)}, true)
	ctx := context.Background()
	resp, err := e.d.CreateVolume(ctx, createReq("vol", 1<<30, map[string]string{"fsType": "xfs", "atomicSource": "hardware"}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	scriptFormat(e)
	staging := filepath.Join(e.dir, "staging")
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}); err != nil {
		t.Fatal(err)
	}
	health := func() []*csi.VolumeHealth_VolumeHealthEntry {
		r, err := e.d.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, StagingTargetPath: staging})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetVolumeHealth().GetHealthStatuses()
	}
	if h := health(); len(h) != 0 {
		t.Fatalf("healthy volume reported %v", h)
	}
	if _, err := m.Probe("/dev/loop0"); err != nil { // the device now writes in software only
		t.Fatal(err)
	}
	if h := health(); len(h) != 1 || h[0].GetStatus() != csi.VolumeHealthErrorType_DEGRADED || h[0].GetReason() != healthAtomicNotVerified {
		t.Errorf("health %v, want DEGRADED %s", h, healthAtomicNotVerified)
	}
}
