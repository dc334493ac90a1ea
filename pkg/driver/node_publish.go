package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
)

func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := d.nodePublish(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *Driver) nodePublish(ctx context.Context, req *csi.NodePublishVolumeRequest) error {
	id, target, vc := req.GetVolumeId(), req.GetTargetPath(), req.GetVolumeCapability()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if err := checkPath("target_path", target); err != nil {
		return err
	}
	if err := checkCapability(vc, ""); err != nil {
		return err
	}
	if req.GetVolumeContext()[contextEphemeral] == "true" {
		return d.publishEphemeral(req)
	}
	if err := checkPath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	vol, release, err := d.lockVolume(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	if err := checkCapability(vc, vol.Meta[ParamFSType]); err != nil {
		return err
	}
	opts := []string{"bind"}
	if req.GetReadonly() || vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY {
		opts = append(opts, "ro")
	}

	if vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		if err := d.singleWriter(ctx, id, req.GetStagingTargetPath(), target); err != nil {
			return err
		}
	}

	var source string
	if vc.GetBlock() != nil {
		st, ok, err := d.state.get(id)
		if err != nil {
			return err
		}
		if !ok || !st.Block {
			return fmt.Errorf("%w: block volume %s has not been staged on this node", ErrNotStaged, id)
		}
		source = st.Device
		if err := makeFile(target); err != nil {
			return err
		}
	} else {
		staged, err := d.mounter.IsMountPoint(req.GetStagingTargetPath())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check staging mount: %w", err)
		}
		if !staged {
			return fmt.Errorf("%w: %s is not mounted; call NodeStageVolume first", ErrNotStaged, req.GetStagingTargetPath())
		}
		source = req.GetStagingTargetPath()
		if err := os.MkdirAll(target, 0o750); err != nil {
			return fmt.Errorf("create target_path: %w", err)
		}
		opts = append(opts, vc.GetMount().GetMountFlags()...)
	}
	if err := d.bindOnce(source, target, opts); err != nil {
		return err
	}
	klog.InfoS("published volume", "volumeID", id, "targetPath", target, "options", opts)
	return nil
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

// publishEphemeral serves the shim directory as an inline ephemeral volume.
func (d *Driver) publishEphemeral(req *csi.NodePublishVolumeRequest) error {
	id, target := req.GetVolumeId(), req.GetTargetPath()
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
	release, err := d.inflight.acquire(id)
	if err != nil {
		return err
	}
	defer release()
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("create target_path: %w", err)
	}
	if err := d.bindOnce(d.opts.ShimDir, target, []string{"bind", "ro"}); err != nil {
		return err
	}
	klog.InfoS("published shim volume", "volumeID", id, "targetPath", target, "shimDir", d.opts.ShimDir)
	return nil
}

// bindOnce bind-mounts source at target unless target is already a mount point.
func (d *Driver) bindOnce(source, target string, opts []string) error {
	mounted, err := d.mounter.IsMountPoint(target)
	if err != nil {
		return fmt.Errorf("check mount at %s: %w", target, err)
	}
	if mounted {
		klog.V(4).InfoS("already mounted", "targetPath", target)
		return nil
	}
	if err := d.mounter.Mount(source, target, "", opts); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	return nil
}

// makeFile creates an empty file (a block volume's target) and its parent.
func makeFile(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return fmt.Errorf("create target_path parent: %w", err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create target_path: %w", err)
	}
	return f.Close()
}

func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := d.nodeUnpublish(req); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (d *Driver) nodeUnpublish(req *csi.NodeUnpublishVolumeRequest) error {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if err := checkPath("target_path", target); err != nil {
		return err
	}
	if !validToken(id) {
		return fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	release, err := d.inflight.acquire(id)
	if err != nil {
		return err
	}
	defer release()
	if err := d.unmountAll(target); err != nil {
		return err
	}
	// The target is ours to remove (CSI: the plugin creates and deletes it).
	if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := mount.CleanupMountPoint(target, d.mounter, true); err != nil {
		return fmt.Errorf("remove target_path: %w", err)
	}
	klog.InfoS("unpublished volume", "volumeID", id, "targetPath", target)
	return nil
}
