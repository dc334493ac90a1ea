package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// perVolumeDevices gives each volume of the fake backend its own device.
type perVolumeDevices struct{ *fakeBackend }

func (b perVolumeDevices) Attach(ctx context.Context, id string) (string, error) {
	if _, err := b.Get(ctx, id); err != nil {
		return "", err
	}
	return "/dev/fake-" + id, nil
}

// TestNodePathRefusals: symlinked paths, the driver's own directories, a
// path with "..", and a leaf of the wrong type are InvalidArgument, and
// nothing is created or mounted for them.
func TestNodePathRefusals(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	id := createVol(t, e, map[string]string{"fsType": "xfs", "atomicPolicy": "prefer"})
	elsewhere := filepath.Join(e.dir, "elsewhere")
	for _, d := range []string{elsewhere, e.dir + "/realparent", e.dir + "/state/staged", e.dir + "/shim", e.dir + "/loop", e.dir + "/pods"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(elsewhere, e.dir+"/link"))
	must(os.Symlink(e.dir+"/realparent", e.dir+"/linkparent"))
	must(os.WriteFile(e.dir+"/file", nil, 0o600))
	must(os.WriteFile(e.dir+"/pods/blockfile", nil, 0o600))
	must(os.Symlink(e.dir+"/file", e.dir+"/pods/blocklink"))

	stage := func(p string, vc *csi.VolumeCapability) error {
		_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: p, VolumeCapability: vc})
		return err
	}
	publishShim := func(p string) error {
		_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "csi-shim", TargetPath: p, VolumeCapability: mountCap(snw, ""),
			VolumeContext: map[string]string{contextEphemeral: "true", contextType: typeShim}})
		return err
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"staging is a symlink to a directory", func() error { return stage(e.dir+"/link", mountCap(snw, "")) }},
		{"staging's parent is a symlink", func() error { return stage(e.dir+"/linkparent/staging", mountCap(snw, "")) }},
		{"staging below a symlinked parent that does not exist yet", func() error { return stage(e.dir+"/link/a/b", mountCap(snw, "")) }},
		{"staging with ..", func() error { return stage(e.dir+"/pods/../staging", mountCap(snw, "")) }},
		{"staging is a regular file", func() error { return stage(e.dir+"/file", mountCap(snw, "")) }},
		{"staging is --loop-dir", func() error { return stage(e.dir+"/loop", mountCap(snw, "")) }},
		{"staging under --state-dir", func() error { return stage(e.dir+"/state/staged/x", mountCap(snw, "")) }},
		{"staging is --shim-dir", func() error { return stage(e.dir+"/shim", mountCap(snw, "")) }},
		{"staging contains the driver's directories", func() error { return stage(e.dir, mountCap(snw, "")) }},
		{"staging is the CSI socket", func() error { return stage(e.dir+"/csi.sock", mountCap(snw, "")) }},
		{"block staging is a symlink", func() error { return stage(e.dir+"/link", blockCap(snw)) }},
		{"shim target is a symlink", func() error { return publishShim(e.dir + "/link") }},
		{"shim target inside --shim-dir", func() error { return publishShim(e.dir + "/shim/glibc") }},
		{"shim target under a symlinked parent", func() error { return publishShim(e.dir + "/linkparent/t") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument", got)
			}
		})
	}
	if mps, _ := e.mounter.List(); len(mps) != 0 {
		t.Errorf("refused calls mounted %v", mps)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("created %d entries through a symlink", len(ents))
	}
	if _, err := os.Lstat(e.dir + "/realparent/staging"); !os.IsNotExist(err) {
		t.Errorf("created a staging path through a symlinked parent: %v", err)
	}

	// Publishing: a staged mount volume refuses a file or symlink target; a
	// staged block volume refuses a directory target and takes a file.
	staging := e.dir + "/pods/staging"
	scriptFormat(e)
	must(stage(staging, mountCap(snw, "")))
	publish := func(target string, vc *csi.VolumeCapability, staging string) error {
		_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc})
		return err
	}
	for name, target := range map[string]string{"file": e.dir + "/file", "symlink": e.dir + "/link", "own dir": e.dir + "/state/t",
		"inside staging": staging + "/t", "staging itself": staging} {
		if got := status.Code(publish(target, mountCap(snw, ""), staging)); got != codes.InvalidArgument {
			t.Errorf("mount target %s: code %v, want InvalidArgument", name, got)
		}
	}
	blockID := func() string {
		r, err := e.d.CreateVolume(ctx, createReq("blk", 1<<30, map[string]string{"atomicPolicy": "prefer"}))
		must(err)
		return r.GetVolume().GetVolumeId()
	}()
	bstaging := e.dir + "/pods/bstaging"
	if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: blockID, StagingTargetPath: bstaging, VolumeCapability: blockCap(snw)}); err != nil {
		t.Fatal(err)
	}
	pub := func(target string) error {
		_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: blockID, StagingTargetPath: bstaging, TargetPath: target, VolumeCapability: blockCap(snw)})
		return err
	}
	if got := status.Code(pub(e.dir + "/pods")); got != codes.InvalidArgument {
		t.Errorf("block target a directory: code %v, want InvalidArgument", got)
	}
	if got := status.Code(pub(e.dir + "/pods/blocklink")); got != codes.InvalidArgument {
		t.Errorf("block target a symlink: code %v, want InvalidArgument", got)
	}
	if err := pub(e.dir + "/pods/blockfile"); err != nil {
		t.Errorf("block target an existing file: %v", err)
	}
	if err := pub(e.dir + "/pods/new/blockfile"); err != nil {
		t.Errorf("block target a new file: %v", err)
	}
	// A block volume grows in the backend only; kubelet names its own
	// device map directory as the volume path, which is not touched.
	if _, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: blockID, VolumePath: e.dir + "/pods",
		VolumeCapability: blockCap(snw), CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}}); err != nil {
		t.Errorf("block expansion: %v", err)
	}
}

// TestNodeOtherVolumesPaths: a node call acts only on paths recorded for
// the volume it names; another volume's paths are refused and nothing of
// it is unmounted, and a volume is staged at one path only.
func TestNodeOtherVolumesPaths(t *testing.T) {
	e := newFakeDriver(t)
	e.d.backend = perVolumeDevices{e.backend}
	ctx := context.Background()
	params := map[string]string{"fsType": "xfs", "atomicPolicy": "prefer"}
	mk := func(name string) string {
		r, err := e.d.CreateVolume(ctx, createReq(name, 1<<30, params))
		if err != nil {
			t.Fatal(err)
		}
		return r.GetVolume().GetVolumeId()
	}
	a, b := mk("a"), mk("b")
	sA, sB, tB := e.dir+"/pods/a/staging", e.dir+"/pods/b/staging", e.dir+"/pods/b/target"
	vc := mountCap(snw, "")
	scriptFormat(e)
	scriptFormat(e)
	for _, s := range []struct{ id, p string }{{a, sA}, {b, sB}} {
		if _, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: s.id, StagingTargetPath: s.p, VolumeCapability: vc}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: b, StagingTargetPath: sB, TargetPath: tB, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	before, _ := e.mounter.List()

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"publish A from B's staging path", func() error {
			_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: a, StagingTargetPath: sB, TargetPath: e.dir + "/pods/a/t", VolumeCapability: vc})
			return err
		}, codes.InvalidArgument},
		{"publish A at B's target", func() error {
			_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: a, StagingTargetPath: sA, TargetPath: tB, VolumeCapability: vc})
			return err
		}, codes.InvalidArgument},
		{"unstage A at B's staging path", func() error {
			_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: a, StagingTargetPath: sB})
			return err
		}, codes.FailedPrecondition},
		{"unpublish A at B's target", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: a, TargetPath: tB})
			return err
		}, codes.FailedPrecondition},
		{"unpublish the shim at B's target", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-shim", TargetPath: tB})
			return err
		}, codes.FailedPrecondition},
		{"stats of A at /etc", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: a, VolumePath: "/etc"})
			return err
		}, codes.NotFound},
		{"stats of A at B's target", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: a, VolumePath: tB})
			return err
		}, codes.NotFound},
		{"expand A at B's target", func() error {
			_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: a, VolumePath: tB})
			return err
		}, codes.NotFound},
		{"expand A with B's staging path", func() error {
			_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: a, VolumePath: sA, StagingTargetPath: sB})
			return err
		}, codes.InvalidArgument},
		{"health of A at B's staging path", func() error {
			_, err := e.d.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: a, StagingTargetPath: sB})
			return err
		}, codes.InvalidArgument},
		{"stage A inside B's staging path", func() error {
			_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: a, StagingTargetPath: sB + "/sub", VolumeCapability: vc})
			return err
		}, codes.InvalidArgument},
		{"stage A at a second path", func() error {
			_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: a, StagingTargetPath: e.dir + "/pods/a/staging2", VolumeCapability: vc})
			return err
		}, codes.FailedPrecondition},
		{"stage A again at its path", func() error {
			_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: a, StagingTargetPath: sA, VolumeCapability: vc})
			return err
		}, codes.OK},
		{"unstage A at a path holding nothing", func() error {
			_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: a, StagingTargetPath: e.dir + "/pods/none"})
			return err
		}, codes.OK},
		{"unpublish A at a path holding nothing", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: a, TargetPath: e.dir + "/pods/none"})
			return err
		}, codes.OK},
		{"stats of B at its target", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: b, VolumePath: tB})
			return err
		}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
			if after, _ := e.mounter.List(); len(after) != len(before) {
				t.Fatalf("mounts changed: %v, were %v", after, before)
			}
		})
	}
	if st, ok, _ := e.d.state.get(a); !ok || st.StagingPath != sA {
		t.Errorf("A's staging record lost or moved: %v %+v", ok, st)
	}
	// B's own calls still work and clean up.
	if _, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: b, TargetPath: tB}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tB); !os.IsNotExist(err) {
		t.Errorf("B's target left: %v", err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: b, StagingTargetPath: sB}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.mounter.IsMountPoint(sB); ok {
		t.Error("B still staged")
	}
}

// TestStateTempFileNotFollowed: a symlink planted where the state file's
// temporary file used to go is neither followed nor truncated.
func TestStateTempFileNotFollowed(t *testing.T) {
	dir := t.TempDir()
	s := &stateStore{dir: filepath.Join(dir, "staged")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := volumeIDForName("v")
	if err := os.Symlink(victim, filepath.Join(s.dir, id+".json.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := s.put(stagedVolume{VolumeID: id, StagingPath: "/st"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("file behind the planted symlink now holds %q", b)
	}
	if v, ok, err := s.get(id); err != nil || !ok || v.StagingPath != "/st" {
		t.Errorf("record %+v %v %v", v, ok, err)
	}
}
