package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Health reasons reported by NodeGetVolumeHealth.
const (
	healthNotStaged         = "NotStaged"
	healthNotMounted        = "NotMounted"
	healthAtomicNotVerified = "AtomicWritesNotVerified"
	healthDeviceMissing     = "DeviceMissing"
	storageBackendNotUsable = "BackendNotUsable"
)

func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	return reply(d.nodeHealth(ctx, req))
}

// nodeHealth reports a volume as INACCESSIBLE when its mount (or device)
// is gone and DEGRADED when atomic writes verified at staging no longer
// verify; a volume staged without atomic writes (policy prefer) is healthy.
func (d *Driver) nodeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if err := required("volume_id", id); err != nil {
		return nil, err
	}
	paths, err := d.healthPaths(req)
	if err != nil {
		return nil, err
	}
	vol, err := d.lookupVolume(ctx, id)
	if err != nil {
		return nil, err
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
	if p := paths["staging_target_path"]; p != "" {
		if err := stagedAt(id, p, st); err != nil {
			return nil, err
		}
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
	if st.Verified.Atomic {
		if err := d.reverify(ctx, vol.BackendVolume, vol.spec, st); err != nil {
			bad(csi.VolumeHealthErrorType_DEGRADED, healthAtomicNotVerified,
				fmt.Sprintf("atomic writes of %d bytes no longer verify: %v", st.Unit, err))
		}
	}
	return resp, nil
}

// healthPaths canonicalizes the paths a NodeGetVolumeHealth request names,
// keyed by their field names; an empty one is left out.
func (d *Driver) healthPaths(req *csi.NodeGetVolumeHealthRequest) (map[string]string, error) {
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
	return paths, nil
}

// reverify verifies again the atomic writes staging verified on a mounted
// volume, and records a failure (metrics, and the backend metadata the
// controller's volume health reads).
func (d *Driver) reverify(ctx context.Context, vol BackendVolume, spec volumeSpec, st stagedVolume) error {
	id := vol.ID
	v, err := d.atomic.Verify(st.StagingPath, st.Unit)
	if err == nil && !v.Atomic {
		err = errors.New(v.Reason)
	}
	if err == nil && !v.Hardware && spec.Source == untorn.SourceHardware {
		// A class that asks for hardware atomic writes (the LV grew onto a
		// device without them, say) no longer gets them.
		err = fmt.Errorf("they are done in software, and the volume asks for %s %s", ParamAtomicSource, untorn.SourceHardware)
	}
	d.metrics.SetVolumeAtomic(id, uint64(v.UnitMin), uint64(v.UnitMax), err == nil, st.Hardware)
	if err == nil {
		return nil
	}
	d.metrics.VerificationFailed(id)
	klog.InfoS("atomic write verification failed", "volumeID", id, "stagingPath", st.StagingPath, "err", err)
	if merr := d.setMetaChanged(ctx, vol, map[string]string{metaVerifyFailed: "true"}); merr != nil {
		klog.ErrorS(merr, "record failed verification", "volumeID", id)
	}
	return err
}

func (d *Driver) NodeGetStorageHealth(ctx context.Context, _ *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	resp := &csi.NodeGetStorageHealthResponse{}
	if err := d.backend.Check(ctx); err != nil {
		resp.BackendHealth = append(resp.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: csi.StorageHealthErrorType_STORAGE_UNREACHABLE, Reason: storageBackendNotUsable, Message: err.Error()})
	}
	return resp, nil
}
