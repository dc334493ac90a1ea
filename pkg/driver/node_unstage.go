package driver

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
)

func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	return reply(&csi.NodeUnstageVolumeResponse{}, d.nodeUnstage(ctx, req))
}

func (d *Driver) nodeUnstage(ctx context.Context, req *csi.NodeUnstageVolumeRequest) error {
	id := req.GetVolumeId()
	staging, release, err := d.lockPath(id, "staging_target_path", req.GetStagingTargetPath(), validVolumeID)
	if err != nil {
		return err
	}
	defer release()
	st, staged, err := d.state.get(id)
	if err != nil {
		return err
	}
	if err := d.unmountOwn(id, "staging_target_path", staging, func() (string, error) { return d.volumeDevice(ctx, id, st, staged) }); err != nil {
		return err
	}
	if staged && st.StagingPath != staging {
		// The volume is staged elsewhere: this path held nothing of it.
		klog.V(4).InfoS("unstage of a path the volume is not staged at", "volumeID", id, "stagingPath", staging, "recorded", st.StagingPath)
		return nil
	}
	if err := d.state.remove(id); err != nil {
		return err
	}
	d.metrics.DeleteVolume(id)
	klog.InfoS("unstaged volume", "volumeID", id, "stagingPath", staging)
	return nil
}

// unmountOwn unmounts p until it is no mount point, but only mounts whose
// source is the volume's (source is asked for only when p is mounted); a
// mount of anything else is refused and left alone. A missing p is fine.
func (d *Driver) unmountOwn(id, field, p string, source func() (string, error)) error {
	src := ""
	for i := 0; i < 8; i++ {
		mp, err := d.mountAt(p)
		if err != nil || mp == nil {
			return err
		}
		if src == "" {
			if src, err = source(); err != nil {
				return fmt.Errorf("%w: %s %s is mounted and volume %s cannot be looked up (%v); nothing unmounted", ErrVolumeInUse, field, p, id, err)
			}
		}
		if !fromSource(mp, src) {
			return fmt.Errorf("%w: %s %s holds %s, not volume %s; nothing unmounted", ErrVolumeInUse, field, p, mp.Device, id)
		}
		if err := d.mounter.Unmount(p); err != nil {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return fmt.Errorf("%s is still a mount point after repeated unmounts", p)
}
