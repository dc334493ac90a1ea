package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
)

func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	return reply(d.nodeExpand(ctx, req))
}

func (d *Driver) nodeExpand(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if err := required("volume_id", id); err != nil {
		return nil, err
	}
	if err := required("volume_path", p); err != nil {
		return nil, err
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapability(c); err != nil {
			return nil, err
		}
	}
	vol, release, err := d.lockVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	defer release()
	st, staged, err := d.state.get(id)
	if err != nil {
		return nil, err
	}
	block, err := d.expandPaths(req, st, staged)
	if err != nil {
		return nil, err
	}
	size := vol.SizeBytes
	if cr := req.GetCapacityRange(); cr != nil {
		if size, err = d.volumeSize(cr, vol.spec); err != nil {
			return nil, err
		}
	}
	// Grow the backend volume (a no-op when the controller already did)
	// and make the device see its new size.
	vol.BackendVolume, err = d.expandPlaced(ctx, vol.BackendVolume, max(size, vol.SizeBytes), vol.spec)
	if err != nil {
		return nil, fmt.Errorf("expand volume %s: %w", id, err)
	}
	if block {
		return &csi.NodeExpandVolumeResponse{CapacityBytes: vol.SizeBytes}, nil
	}
	dev, err := d.backend.Attach(ctx, id)
	if err != nil {
		return nil, err
	}
	// The filesystem is grown through the volume's own staging mount.
	mountPath := st.StagingPath
	if _, err := d.resizer.Resize(dev, mountPath); err != nil {
		return nil, fmt.Errorf("grow filesystem on %s at %s: %w", dev, mountPath, err)
	}
	klog.InfoS("expanded volume on node", "volumeID", id, "sizeBytes", vol.SizeBytes, "device", dev)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: vol.SizeBytes}, nil
}

// expandPaths checks a NodeExpandVolume request's paths against the
// volume's state: the volume path must be the volume's (for a block volume,
// kubelet's own device map path must exist), the staging path, when given,
// where it is staged. It reports whether the volume is a block volume.
func (d *Driver) expandPaths(req *csi.NodeExpandVolumeRequest, st stagedVolume, staged bool) (bool, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	block := req.GetVolumeCapability().GetBlock() != nil || (staged && st.Block)
	if block {
		// Nothing is done at a block volume's path (kubelet passes its
		// own device map path): the backend grows the device.
		if _, err := statVolumePath(p); errors.Is(err, ErrVolumeNotFound) {
			return false, err
		}
	} else if _, err := d.volumePath(id, "volume_path", p); err != nil {
		return false, err
	}
	if sp := req.GetStagingTargetPath(); sp != "" {
		c, err := d.nodePath("staging_target_path", sp, pathAny)
		if err != nil {
			return false, err
		}
		if err := stagedAt(id, c, st); err != nil {
			return false, err
		}
	}
	return block, nil
}
