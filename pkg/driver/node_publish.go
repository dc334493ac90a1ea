package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
)

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	return reply(&csi.NodePublishVolumeResponse{}, d.nodePublish(ctx, req))
}

// nodePublish checks the request, serves the shim's inline ephemeral
// volume, or locks the volume, checks it is staged here, and bind-mounts
// it at the target (publishBlock, publishFilesystem).
func (d *Driver) nodePublish(ctx context.Context, req *csi.NodePublishVolumeRequest) error {
	id, vc := req.GetVolumeId(), req.GetVolumeCapability()
	if err := required("volume_id", id); err != nil {
		return err
	}
	if err := checkPath("target_path", req.GetTargetPath()); err != nil {
		return err
	}
	if err := checkCapability(vc); err != nil {
		return err
	}
	kind := pathDir
	if vc.GetBlock() != nil {
		kind = pathFile
	}
	target, err := d.nodePath("target_path", req.GetTargetPath(), kind)
	if err != nil {
		return err
	}
	if req.GetVolumeContext()[contextEphemeral] == "true" {
		return d.publishEphemeral(req, target)
	}
	if err := checkPath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	vol, release, err := d.lockVolume(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	st, err := d.stagedFor(vol, vc, filepath.Clean(req.GetStagingTargetPath()), target)
	if err != nil {
		return err
	}
	if vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		if err := d.singleWriter(ctx, id, st.StagingPath, target); err != nil {
			return err
		}
	}
	opts := []string{"bind"}
	if req.GetReadonly() || vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY {
		opts = append(opts, "ro")
	}
	if st.Block {
		return d.publishBlock(st, target, opts)
	}
	return d.publishFilesystem(st, target, append(opts, vc.GetMount().GetMountFlags()...))
}

// stagedFor returns the node's record of a volume staged at staging as the
// capability's kind (block or mount), for publishing at target.
func (d *Driver) stagedFor(vol volume, vc *csi.VolumeCapability, staging, target string) (stagedVolume, error) {
	if err := vol.spec.checkFSType(vc); err != nil {
		return stagedVolume{}, err
	}
	st, ok, err := d.state.get(vol.ID)
	if err != nil {
		return stagedVolume{}, err
	}
	if !ok || st.Block != (vc.GetBlock() != nil) {
		return stagedVolume{}, fmt.Errorf("%w: volume %s has not been staged on this node as a %s volume", ErrNotStaged, vol.ID, accessKind(vc))
	}
	if err := stagedAt(vol.ID, staging, st); err != nil {
		return stagedVolume{}, err
	}
	if overlaps(target, st.StagingPath) {
		return stagedVolume{}, fmt.Errorf("%w: target_path %s overlaps the volume's staging path %s", ErrInvalidArgument, target, st.StagingPath)
	}
	return st, d.claimedByOther(vol.ID, "target_path", target)
}

// publishBlock binds the volume's device onto a file at target.
func (d *Driver) publishBlock(st stagedVolume, target string, opts []string) error {
	if err := makeFileNoFollow("target_path", target); err != nil {
		return err
	}
	return d.bindRecorded(st, st.Device, target, opts)
}

// publishFilesystem binds the volume's staging mount onto a directory at
// target; the staging path must still hold the volume's device.
func (d *Driver) publishFilesystem(st stagedVolume, target string, opts []string) error {
	mp, err := d.mountAt(st.StagingPath)
	if err != nil {
		return err
	}
	if mp == nil || !fromSource(mp, st.Device) {
		return fmt.Errorf("%w: %s does not hold volume %s; call NodeStageVolume first", ErrNotStaged, st.StagingPath, st.VolumeID)
	}
	if err := mkdirNoFollow("target_path", target); err != nil {
		return err
	}
	return d.bindRecorded(st, st.StagingPath, target, opts)
}

// bindRecorded bind-mounts source at target (see bindOnce) and records
// target among the volume's targets.
func (d *Driver) bindRecorded(st stagedVolume, source, target string, opts []string) error {
	if err := d.bindOnce(source, st.Device, target, opts); err != nil {
		return err
	}
	if !slices.Contains(st.Targets, target) {
		st.Targets = append(st.Targets, target)
		if err := d.state.put(st); err != nil {
			return fmt.Errorf("record published volume: %w", err)
		}
	}
	klog.InfoS("published volume", "volumeID", st.VolumeID, "targetPath", target, "options", opts)
	return nil
}

func accessKind(vc *csi.VolumeCapability) string {
	if vc.GetBlock() != nil {
		return "block"
	}
	return "mount"
}

// singleWriter refuses a second publication of a SINGLE_NODE_SINGLE_WRITER
// volume: its device must not be mounted anywhere but the staging and
// target paths.
func (d *Driver) singleWriter(ctx context.Context, id, staging, target string) error {
	dev, err := d.backend.Attach(ctx, id)
	if err != nil {
		return err
	}
	others, err := d.mountsOf(dev, staging, target)
	if err != nil {
		return err
	}
	if len(others) > 0 {
		return fmt.Errorf("%w: single-writer volume %s is already published at %v", ErrVolumeInUse, id, others)
	}
	return nil
}

// publishEphemeral serves the shim directory as an inline ephemeral volume
// at target (already checked by nodePath).
func (d *Driver) publishEphemeral(req *csi.NodePublishVolumeRequest, target string) error {
	id := req.GetVolumeId()
	if t := req.GetVolumeContext()[contextType]; t != typeShim {
		return fmt.Errorf("%w: inline ephemeral volumes must have volumeAttributes type=%s, got %q", ErrInvalidArgument, typeShim, t)
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return fmt.Errorf("%w: the shim volume is a mount volume, not block", ErrInvalidArgument)
	}
	if !validToken(id) {
		return fmt.Errorf("%w: volume_id %q", ErrInvalidArgument, id)
	}
	if fi, err := os.Stat(d.opts.ShimDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: shim directory %s is not available on this node", ErrNotStaged, d.opts.ShimDir)
	}
	if err := d.claimedByOther(id, "target_path", target); err != nil {
		return err
	}
	release, err := d.inflight.acquire(id)
	if err != nil {
		return err
	}
	defer release()
	if err := mkdirNoFollow("target_path", target); err != nil {
		return err
	}
	if err := d.bindOnce(d.opts.ShimDir, d.opts.ShimDir, target, []string{"bind", "ro"}); err != nil {
		return err
	}
	klog.InfoS("published shim volume", "volumeID", id, "targetPath", target, "shimDir", d.opts.ShimDir)
	return nil
}

// bindOnce bind-mounts source at target unless target already holds want
// (the volume's device, or the shim directory); a target holding anything
// else is refused.
func (d *Driver) bindOnce(source, want, target string, opts []string) error {
	mp, err := d.mountAt(target)
	if err != nil {
		return err
	}
	if mp != nil {
		if !fromSource(mp, want) {
			return fmt.Errorf("%w: target_path %s already holds %s, not %s", ErrVolumeInUse, target, mp.Device, want)
		}
		klog.V(4).InfoS("already mounted", "targetPath", target)
		return nil
	}
	if err := d.mounter.Mount(source, target, "", opts); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	return nil
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return reply(&csi.NodeUnpublishVolumeResponse{}, d.nodeUnpublish(ctx, req))
}

func (d *Driver) nodeUnpublish(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) error {
	id := req.GetVolumeId()
	target, release, err := d.lockPath(id, "target_path", req.GetTargetPath(), validToken)
	if err != nil {
		return err
	}
	defer release()
	var st stagedVolume
	staged := false
	source := func() (string, error) { return d.opts.ShimDir, nil }
	if validVolumeID(id) {
		if st, staged, err = d.state.get(id); err != nil {
			return err
		}
		source = func() (string, error) { return d.volumeDevice(ctx, id, st, staged) }
	}
	wasMounted, err := d.mountAt(target)
	if err != nil {
		return err
	}
	if err := d.unmountOwn(id, "target_path", target, source); err != nil {
		return err
	}
	recorded := staged && slices.Contains(st.Targets, target)
	if recorded {
		st.Targets = slices.DeleteFunc(st.Targets, func(t string) bool { return t == target })
		if err := d.state.put(st); err != nil {
			return fmt.Errorf("record unpublished volume: %w", err)
		}
	}
	// The target is ours to remove (CSI: the plugin creates and deletes
	// it) when it was published for this volume; any other path is left.
	if wasMounted == nil && !recorded {
		return nil
	}
	// unmountOwn left no mount point there.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove target_path: %w", err)
	}
	klog.InfoS("unpublished volume", "volumeID", id, "targetPath", target)
	return nil
}
