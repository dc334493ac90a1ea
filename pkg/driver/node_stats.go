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

	untorn "github.com/untorn/untorn/pkg/atomic"
)

func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	resp, err := d.nodeStats(ctx, req)
	return resp, toStatus(err)
}

func (d *Driver) nodeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if p == "" {
		return nil, fmt.Errorf("%w: volume_path is required", ErrInvalidArgument)
	}
	if _, err := d.getVolume(ctx, id); err != nil {
		return nil, err
	}
	p, err := d.volumePath(id, "volume_path", p)
	if err != nil {
		return nil, err
	}
	fi, err := statVolumePath(p)
	if err != nil {
		return nil, err
	}
	resp := &csi.NodeGetVolumeStatsResponse{}
	if fi.Mode()&os.ModeDevice != 0 {
		size, err := deviceSize(p)
		if err != nil {
			return nil, err
		}
		resp.Usage = []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}
		return resp, nil
	}
	fs, err := fsStats(p)
	if err != nil {
		return nil, err
	}
	resp.Usage = []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: fs.total, Available: fs.avail, Used: fs.total - fs.free},
		{Unit: csi.VolumeUsage_INODES, Total: fs.inodes, Available: fs.inodesFree, Used: fs.inodes - fs.inodesFree},
	}
	return resp, nil
}

// volumePath checks that p is a path recorded for volume id on this node
// (its staging path or one of its targets) and that it holds the volume's
// device now; anything else is ErrVolumeNotFound. It returns p cleaned.
func (d *Driver) volumePath(id, field, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: no volume at %s %q (not an absolute path)", ErrVolumeNotFound, field, p)
	}
	c, err := d.nodePath(field, p, pathAny)
	if err != nil {
		return "", err
	}
	st, staged, err := d.state.get(id)
	if err != nil {
		return "", err
	}
	if !staged || (c != st.StagingPath && !slices.Contains(st.Targets, c)) {
		return "", fmt.Errorf("%w: volume %s is not staged or published at %s %s on this node", ErrVolumeNotFound, id, field, c)
	}
	if st.Block && c == st.StagingPath {
		return "", fmt.Errorf("%w: block volume %s is published at its targets, not at its staging path %s", ErrVolumeNotFound, id, c)
	}
	mp, err := d.mountAt(c)
	if err != nil {
		return "", err
	}
	if mp == nil || !fromSource(mp, st.Device) {
		return "", fmt.Errorf("%w: %s %s does not hold volume %s now", ErrVolumeNotFound, field, c, id)
	}
	return c, nil
}

// statVolumePath stats a request's volume_path; a relative or missing path
// is ErrVolumeNotFound.
func statVolumePath(p string) (os.FileInfo, error) {
	if !filepath.IsAbs(p) {
		return nil, fmt.Errorf("%w: no volume at volume_path %q (not an absolute path)", ErrVolumeNotFound, p)
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: volume_path %s does not exist", ErrVolumeNotFound, p)
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	return fi, nil
}

// Health reasons reported by NodeGetVolumeHealth.
const (
	healthNotStaged         = "NotStaged"
	healthNotMounted        = "NotMounted"
	healthAtomicNotVerified = "AtomicWritesNotVerified"
	healthDeviceMissing     = "DeviceMissing"
	storageBackendNotUsable = "BackendNotUsable"
)

func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	resp, err := d.nodeHealth(ctx, req)
	return resp, toStatus(err)
}

// nodeHealth reports a volume as INACCESSIBLE when its mount (or device)
// is gone and DEGRADED when atomic writes verified at staging no longer
// verify; a volume staged without atomic writes (policy prefer) is healthy.
func (d *Driver) nodeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	paths := map[string]string{}
	for _, f := range []struct{ name, p string }{{"volume_publish_path", req.GetVolumePublishPath()}, {"staging_target_path", req.GetStagingTargetPath()}} {
		if f.p != "" {
			c, err := d.nodePath(f.name, f.p, pathAny)
			if err != nil {
				return nil, err
			}
			paths[f.name] = c
		}
	}
	vol, err := d.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	spec, err := specOf(vol.Meta)
	if err != nil {
		return nil, fmt.Errorf("volume %s: stored class: %w", id, err)
	}
	health := &csi.VolumeHealth{VolumeId: id}
	resp := &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}
	bad := func(t csi.VolumeHealthErrorType, reason, msg string) {
		health.HealthStatuses = append(health.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: msg})
	}
	st, staged, err := d.state.get(id)
	if err != nil {
		return nil, err
	}
	if !staged {
		if req.GetStagingTargetPath() != "" || req.GetVolumePublishPath() != "" {
			bad(csi.VolumeHealthErrorType_INACCESSIBLE, healthNotStaged, "the volume is not staged on this node")
		}
		return resp, nil
	}
	if p := paths["staging_target_path"]; p != "" && p != st.StagingPath {
		return nil, fmt.Errorf("%w: staging_target_path %s is not where volume %s is staged (%s)", ErrInvalidArgument, p, id, st.StagingPath)
	}
	if p := paths["volume_publish_path"]; p != "" && !slices.Contains(st.Targets, p) {
		return nil, fmt.Errorf("%w: volume_publish_path %s is not a path volume %s is published at", ErrInvalidArgument, p, id)
	}
	if st.Block {
		if _, err := os.Stat(st.Device); err != nil {
			bad(csi.VolumeHealthErrorType_INACCESSIBLE, healthDeviceMissing, fmt.Sprintf("device %s: %v", st.Device, err))
		}
		return resp, nil
	}
	staging := st.StagingPath
	for _, p := range []string{staging, paths["volume_publish_path"]} {
		if p == "" {
			continue
		}
		if mp, err := d.mountAt(p); err != nil || mp == nil || !fromSource(mp, st.Device) {
			bad(csi.VolumeHealthErrorType_INACCESSIBLE, healthNotMounted, fmt.Sprintf("%s is not mounted", p))
			return resp, nil
		}
	}
	if !st.Verified.Atomic {
		return resp, nil
	}
	v, err := d.atomic.Verify(staging, st.Unit)
	if err == nil && !v.Atomic {
		err = errors.New(v.Reason)
	}
	if err == nil && !v.Hardware && spec.Source == untorn.SourceHardware {
		// A class that asks for hardware atomic writes (the LV grew onto a
		// device without them, say) no longer gets them.
		err = fmt.Errorf("they are done in software, and the volume asks for %s %s", ParamAtomicSource, untorn.SourceHardware)
	}
	if err != nil {
		d.metrics.VerificationFailed(id)
		d.metrics.SetVolumeAtomic(id, uint64(v.UnitMin), uint64(v.UnitMax), false, st.Hardware)
		klog.InfoS("atomic write verification failed", "volumeID", id, "stagingPath", staging, "err", err)
		if merr := d.setMetaChanged(ctx, vol, map[string]string{metaVerifyFailed: "true"}); merr != nil {
			klog.ErrorS(merr, "record failed verification", "volumeID", id)
		}
		bad(csi.VolumeHealthErrorType_DEGRADED, healthAtomicNotVerified,
			fmt.Sprintf("atomic writes of %d bytes no longer verify: %v", st.Unit, err))
		return resp, nil
	}
	d.metrics.SetVolumeAtomic(id, uint64(v.UnitMin), uint64(v.UnitMax), true, st.Hardware)
	return resp, nil
}

func (d *Driver) NodeGetStorageHealth(ctx context.Context, _ *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	resp := &csi.NodeGetStorageHealthResponse{}
	if err := d.backend.Check(ctx); err != nil {
		resp.BackendHealth = append(resp.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: csi.StorageHealthErrorType_STORAGE_UNREACHABLE, Reason: storageBackendNotUsable, Message: err.Error()})
	}
	return resp, nil
}

func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	resp, err := d.nodeExpand(ctx, req)
	return resp, toStatus(err)
}

func (d *Driver) nodeExpand(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if id == "" {
		return nil, fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if p == "" {
		return nil, fmt.Errorf("%w: volume_path is required", ErrInvalidArgument)
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
	block := req.GetVolumeCapability().GetBlock() != nil || (staged && st.Block)
	if block {
		// Nothing is done at a block volume's path (kubelet passes its
		// own device map path): the backend grows the device.
		if _, err := statVolumePath(p); errors.Is(err, ErrVolumeNotFound) {
			return nil, err
		}
	} else if _, err := d.volumePath(id, "volume_path", p); err != nil {
		return nil, err
	}
	if sp := req.GetStagingTargetPath(); sp != "" {
		c, err := d.nodePath("staging_target_path", sp, pathAny)
		if err != nil {
			return nil, err
		}
		if c != st.StagingPath {
			return nil, fmt.Errorf("%w: staging_target_path %s is not where volume %s is staged (%s)", ErrInvalidArgument, c, id, st.StagingPath)
		}
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

// NodeGetInfo publishes the node's topology: its node key and the atomic
// write units it can give in hardware (see nodeTopology). Volumes carry
// the node key only.
func (d *Driver) NodeGetInfo(ctx context.Context, _ *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             d.opts.NodeID,
		MaxVolumesPerNode:  d.opts.MaxVolumes,
		AccessibleTopology: d.nodeTopology(ctx),
	}, nil
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}
