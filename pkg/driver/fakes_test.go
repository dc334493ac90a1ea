package driver

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"

	mount "k8s.io/mount-utils"
	testingexec "k8s.io/utils/exec/testing"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// fakeBackend keeps volumes in memory.
type fakeBackend struct {
	mu       sync.Mutex
	vols     map[string]BackendVolume
	capacity int64
	checkErr error
	device   string
	// devices, when set, gives volumes their own device instead of device.
	devices map[string]string
	// setMetas counts SetMeta calls (each an lvchange on LVM).
	setMetas int
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{vols: map[string]BackendVolume{}, capacity: 100 << 30, device: "/dev/fake0"}
}

func (b *fakeBackend) Name() string                            { return "fake" }
func (b *fakeBackend) Check(context.Context) error             { return b.checkErr }
func (b *fakeBackend) AllocationUnit() int64                   { return 1 << 20 }
func (b *fakeBackend) Capacity(context.Context) (int64, error) { return b.capacity, nil }

func (b *fakeBackend) Create(_ context.Context, id string, size int64, meta map[string]string) (BackendVolume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.vols[id]; ok {
		return v, nil
	}
	if size > b.capacity {
		return BackendVolume{}, fmt.Errorf("%w: fake", ErrNoSpace)
	}
	v := BackendVolume{ID: id, SizeBytes: size, Meta: copyMeta(meta)}
	b.vols[id] = v
	b.capacity -= size
	return v, nil
}

func (b *fakeBackend) Get(_ context.Context, id string) (BackendVolume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.vols[id]
	if !ok {
		return BackendVolume{}, fmt.Errorf("%w: %s", ErrVolumeNotFound, id)
	}
	return v, nil
}

func (b *fakeBackend) Delete(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.vols, id)
	return nil
}

func (b *fakeBackend) Expand(_ context.Context, id string, size int64) (BackendVolume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.vols[id]
	if !ok {
		return BackendVolume{}, fmt.Errorf("%w: %s", ErrVolumeNotFound, id)
	}
	if size > v.SizeBytes {
		if size-v.SizeBytes > b.capacity {
			return BackendVolume{}, fmt.Errorf("%w: fake", ErrNoSpace)
		}
		v.SizeBytes = size
		b.vols[id] = v
	}
	return v, nil
}

func (b *fakeBackend) List(context.Context) ([]BackendVolume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []BackendVolume
	for _, v := range b.vols {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (b *fakeBackend) Attach(_ context.Context, id string) (string, error) {
	if _, err := b.Get(context.Background(), id); err != nil {
		return "", err
	}
	if dev, ok := b.devices[id]; ok {
		return dev, nil
	}
	return b.device, nil
}

func (b *fakeBackend) SetMeta(_ context.Context, id string, meta map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setMetas++
	v, ok := b.vols[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrVolumeNotFound, id)
	}
	for k, val := range meta {
		if val == "" {
			delete(v.Meta, k)
		} else {
			v.Meta[k] = val
		}
	}
	return nil
}

// fakeAtomic returns fixed device limits and plans with the real planner.
type fakeAtomic struct {
	limits   untorn.DeviceLimits
	verify   untorn.Verification
	verified int
	// cowHints records the SetCoWExtSize calls as "root=size".
	cowHints []string
}

func (f *fakeAtomic) SetCoWExtSize(root string, size uint64) (bool, error) {
	f.cowHints = append(f.cowHints, fmt.Sprintf("%s=%d", root, size))
	return true, nil
}

func (f *fakeAtomic) Probe(string) (untorn.DeviceLimits, error) { return f.limits, nil }
func (f *fakeAtomic) Plan(dev untorn.DeviceLimits, req untorn.PlanRequest, device string) (untorn.Plan, error) {
	return untorn.PlanFormat(dev, req, device)
}
func (f *fakeAtomic) Verify(string, uint64) (untorn.Verification, error) {
	f.verified++
	return f.verify, nil
}

// mountCall is one Mount call the driver made.
type mountCall struct {
	source, target, fstype string
	options                []string
}

// recordingMounter is mount-utils' fake mounter that also logs each Mount
// call with its options.
type recordingMounter struct {
	*mount.FakeMounter
	mu    sync.Mutex
	calls []mountCall
}

func (m *recordingMounter) Mount(source, target, fstype string, options []string) error {
	m.mu.Lock()
	m.calls = append(m.calls, mountCall{source, target, fstype, append([]string{}, options...)})
	m.mu.Unlock()
	return m.FakeMounter.Mount(source, target, fstype, options)
}

type fakeEnv struct {
	d       *Driver
	backend *fakeBackend
	mounter *mount.FakeMounter
	mounts  *recordingMounter
	exec    *testingexec.FakeExec
	atomic  *fakeAtomic
	dir     string
}

// newFakeDriver builds a driver (mode all) on fakes; no command may run
// unless the test scripts one.
func newFakeDriver(t *testing.T) *fakeEnv {
	t.Helper()
	dir := t.TempDir()
	e := &fakeEnv{
		backend: newFakeBackend(),
		mounter: mount.NewFakeMounter(nil),
		exec:    &testingexec.FakeExec{},
		atomic: &fakeAtomic{limits: untorn.DeviceLimits{Device: "/dev/fake0", Name: "fake0", Disk: "fake0",
			LogicalBlockSize: 512, PhysicalBlockSize: 512, SizeBytes: 1 << 30}},
		dir: dir,
	}
	e.mounts = &recordingMounter{FakeMounter: e.mounter}
	d, err := New(Options{
		Mode: ModeAll, Endpoint: "unix://" + dir + "/csi.sock", NodeID: "node-1", Backend: "loop",
		LoopDir: dir + "/loop", SysfsRoot: "/sys", StateDir: dir + "/state", ShimDir: dir + "/shim",
	}, Deps{
		Backend: e.backend, Mounter: e.mounts, Exec: e.exec, Atomic: e.atomic,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e
}
