package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	return reply(d.nodeStats(ctx, req))
}

func (d *Driver) nodeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, p := req.GetVolumeId(), req.GetVolumePath()
	if err := required("volume_id", id); err != nil {
		return nil, err
	}
	if err := required("volume_path", p); err != nil {
		return nil, err
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
