package driver

import (
	"context"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Controller health reasons.
const (
	healthBackendUnavailable = "BackendUnavailable"
)

func (d *Driver) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	vol, err := d.getVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: d.volumeHealth(vol, d.backend.Check(ctx))}, nil
}

// ControllerListVolumeHealth lists the volumes with an adverse condition,
// paged like ListVolumes.
func (d *Driver) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	vols, err := d.volumesFrom(ctx, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, toStatus(err)
	}
	checkErr := d.backend.Check(ctx)
	resp := &csi.ControllerListVolumeHealthResponse{}
	for _, v := range vols {
		h := d.volumeHealth(v, checkErr)
		if len(h.GetHealthStatuses()) == 0 {
			continue
		}
		if req.GetMaxEntries() > 0 && len(resp.Entries) == int(req.GetMaxEntries()) {
			resp.NextToken = resp.Entries[len(resp.Entries)-1].GetVolumeId()
			break
		}
		resp.Entries = append(resp.Entries, h)
	}
	return resp, nil
}

// volumeHealth is the controller's view: the backend must be usable, and a
// volume whose atomic writes were verified must not since have failed
// verification on its node (NodeGetVolumeHealth records that).
func (d *Driver) volumeHealth(vol BackendVolume, checkErr error) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: vol.ID}
	if checkErr != nil {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: healthBackendUnavailable, Message: checkErr.Error()})
	}
	if failed, _ := strconv.ParseBool(vol.Meta[metaVerifyFailed]); failed {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_DEGRADED, Reason: healthAtomicNotVerified,
			Message: "atomic writes verified at staging failed a later verification on the node"})
	}
	return h
}
