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

// TestNodeRealMountOwnership runs on real loop devices and mounts, where
// the mount table shows a block target's source as devtmpfs and a shim
// target's as the shim directory's filesystem: each unpublish unmounts
// only what is its own, and a symlinked staging path mounts nothing.
func TestNodeRealMountOwnership(t *testing.T) {
	d, dir := loopDriver(t)
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(dir, "shim", "glibc"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := d.CreateVolume(ctx, createReq("blk", 64<<20, map[string]string{"fsType": "ext4", "atomicPolicy": "prefer"}))
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetVolume().GetVolumeId()
	bstaging, btarget := filepath.Join(dir, "pods", "bstaging"), filepath.Join(dir, "pods", "p1", "block")
	if _, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: bstaging, VolumeCapability: blockCap(snw)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: bstaging, TargetPath: btarget, VolumeCapability: blockCap(snw)}); err != nil {
		t.Fatal(err)
	}
	// Again: the target holds this volume's device, so it is idempotent.
	if _, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: bstaging, TargetPath: btarget, VolumeCapability: blockCap(snw)}); err != nil {
		t.Fatalf("publishing again: %v", err)
	}
	if st, err := d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: btarget}); err != nil || st.GetUsage()[0].GetTotal() != 64<<20 {
		t.Fatalf("block stats: %v %v", st, err)
	}
	shimTarget := filepath.Join(dir, "pods", "p1", "shim")
	shimReq := &csi.NodePublishVolumeRequest{VolumeId: "csi-shim1", TargetPath: shimTarget, VolumeCapability: mountCap(snw, ""),
		VolumeContext: map[string]string{contextEphemeral: "true", contextType: typeShim}}
	if _, err := d.NodePublishVolume(ctx, shimReq); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NodePublishVolume(ctx, shimReq); err != nil {
		t.Fatalf("publishing the shim again: %v", err)
	}
	// Crossed unpublishes are refused and unmount nothing.
	if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-shim1", TargetPath: btarget}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("shim unpublish at the block target: code %v, want FailedPrecondition (%v)", status.Code(err), err)
	}
	if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: shimTarget}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("block unpublish at the shim target: code %v, want FailedPrecondition (%v)", status.Code(err), err)
	}
	for _, p := range []string{btarget, shimTarget} {
		if ok, _ := d.mounter.IsMountPoint(p); !ok {
			t.Fatalf("%s was unmounted by a refused call", p)
		}
	}
	if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: btarget}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-shim1", TargetPath: shimTarget}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{btarget, shimTarget} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after unpublish: %v", p, err)
		}
	}
	if _, err := d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: bstaging}); err != nil {
		t.Fatal(err)
	}

	// A staging path that is a symlink to a directory elsewhere.
	xid, _ := xfsVolume(t, d, "symlinked")
	elsewhere := filepath.Join(dir, "elsewhere")
	if err := os.MkdirAll(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "pods", "link")
	if err := os.Symlink(elsewhere, link); err != nil {
		t.Fatal(err)
	}
	if err := stageAt(d, xid, link); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("symlinked staging path: code %v, want InvalidArgument (%v)", status.Code(err), err)
	}
	if ok, _ := d.mounter.IsMountPoint(elsewhere); ok {
		t.Error("mounted over the symlink's target")
	}
	if got := formatState(t, d, xid); got != formatBlank {
		t.Errorf("format state %q after a refused staging, want %q", got, formatBlank)
	}
}
