package driver

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
)

// metaName is the metadata key of the name a volume was created for.
const metaName = "name"

func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	return reply(d.createVolume(ctx, req))
}

func (d *Driver) createVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	spec, size, err := d.createRequest(req)
	if err != nil {
		return nil, err
	}

	id := volumeIDForName(name)
	release, err := d.inflight.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()

	meta := spec.context()
	meta[metaName], meta[metaFormatState] = name, formatBlank
	vol, err := d.backend.Get(ctx, id)
	switch {
	case err == nil:
		if err := compatible(vol, name, spec, req.GetCapacityRange()); err != nil {
			return nil, err
		}
		klog.V(4).InfoS("volume exists", "volumeID", id, "name", name)
	case isNotFound(err):
		vol, err = d.createPlaced(ctx, id, size, meta, spec)
		if err != nil {
			return nil, fmt.Errorf("create volume %q (%d bytes): %w", name, size, err)
		}
		if err := compatible(vol, name, spec, req.GetCapacityRange()); err != nil {
			return nil, err
		}
		klog.InfoS("created volume", "volumeID", id, "name", name, "sizeBytes", vol.SizeBytes,
			"fsType", spec.FSType, "atomicWriteUnit", spec.Unit, "atomicPolicy", spec.Policy)
	default:
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: d.csiVolume(vol)}, nil
}

// createRequest validates a CreateVolume request before anything is
// written: the name, no content source, the class's parameters (fsType
// taken from the capability when the class has none), the capabilities,
// the topology and the size. It returns the parsed spec and the size to
// allocate.
func (d *Driver) createRequest(req *csi.CreateVolumeRequest) (volumeSpec, int64, error) {
	if err := required("name", req.GetName()); err != nil {
		return volumeSpec{}, 0, err
	}
	if req.GetVolumeContentSource() != nil {
		return volumeSpec{}, 0, fmt.Errorf("%w: volume content sources (snapshots, clones) are not supported", ErrInvalidArgument)
	}
	params := map[string]string{}
	for k, v := range req.GetParameters() {
		params[k] = v
	}
	if _, ok := params[ParamFSType]; !ok {
		for _, c := range req.GetVolumeCapabilities() {
			if fs := c.GetMount().GetFsType(); fs != "" {
				params[ParamFSType] = fs
				break
			}
		}
	}
	spec, err := parseSpec(params)
	if err != nil {
		return volumeSpec{}, 0, err
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return volumeSpec{}, 0, err
	}
	if err := spec.checkFSType(req.GetVolumeCapabilities()...); err != nil {
		return volumeSpec{}, 0, err
	}
	if err := d.checkTopology(req.GetAccessibilityRequirements()); err != nil {
		return volumeSpec{}, 0, err
	}
	size, err := d.volumeSize(req.GetCapacityRange(), spec)
	if err != nil {
		return volumeSpec{}, 0, err
	}
	return spec, size, nil
}

// compatible decides whether an existing volume answers a repeated request.
func compatible(vol BackendVolume, name string, spec volumeSpec, cr *csi.CapacityRange) error {
	if vol.Meta[metaName] != name {
		return fmt.Errorf("%w: volume %s belongs to name %q", ErrAlreadyExists, vol.ID, vol.Meta[metaName])
	}
	volCtx := spec.context()
	for _, k := range volumeParams {
		if vol.Meta[k] != volCtx[k] {
			return fmt.Errorf("%w: volume %q exists with %s=%q, requested %q", ErrAlreadyExists, name, k, vol.Meta[k], volCtx[k])
		}
	}
	if vol.SizeBytes < cr.GetRequiredBytes() || (cr.GetLimitBytes() > 0 && vol.SizeBytes > cr.GetLimitBytes()) {
		return fmt.Errorf("%w: volume %q exists with %d bytes, outside the requested range [%d, %d]",
			ErrAlreadyExists, name, vol.SizeBytes, cr.GetRequiredBytes(), cr.GetLimitBytes())
	}
	return nil
}

func (d *Driver) csiVolume(vol BackendVolume) *csi.Volume {
	volCtx := map[string]string{}
	for _, k := range volumeParams {
		if v, ok := vol.Meta[k]; ok {
			volCtx[k] = v
		}
	}
	return &csi.Volume{
		VolumeId:           vol.ID,
		CapacityBytes:      vol.SizeBytes,
		VolumeContext:      volCtx,
		AccessibleTopology: []*csi.Topology{d.topology()},
	}
}

func (d *Driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{TopologyKey: d.opts.NodeID}}
}

// checkTopology refuses a request whose requisite topology excludes this node.
func (d *Driver) checkTopology(tr *csi.TopologyRequirement) error {
	if len(tr.GetRequisite()) == 0 {
		return nil
	}
	for _, t := range tr.GetRequisite() {
		if n, ok := t.GetSegments()[TopologyKey]; ok && n == d.opts.NodeID {
			return nil
		}
	}
	return fmt.Errorf("%w: requisite topology does not include %s=%s", ErrNoSpace, TopologyKey, d.opts.NodeID)
}

func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return reply(&csi.DeleteVolumeResponse{}, d.deleteVolume(ctx, req.GetVolumeId()))
}

func (d *Driver) deleteVolume(ctx context.Context, id string) error {
	if err := required("volume_id", id); err != nil {
		return err
	}
	if !validVolumeID(id) {
		klog.V(4).InfoS("delete of a volume ID this driver never made; nothing to do", "volumeID", id)
		return nil
	}
	release, err := d.inflight.acquire(id)
	if err != nil {
		return err
	}
	defer release()
	vol, err := d.backend.Get(ctx, id)
	if isNotFound(err) {
		// No complete volume: the backend removes what it made of an
		// interrupted create, and leaves alone what it did not make.
		return d.backend.Delete(ctx, id)
	}
	if err != nil {
		return err
	}
	if d.state != nil {
		if _, staged, err := d.state.get(id); err != nil {
			return err
		} else if staged {
			return fmt.Errorf("%w: volume %s is staged on this node; unstage it first", ErrVolumeInUse, id)
		}
	}
	if vol.Device != "" {
		if mps, err := d.mountsOf(vol.Device); err != nil {
			return err
		} else if len(mps) > 0 {
			return fmt.Errorf("%w: device %s of volume %s is mounted at %v", ErrVolumeInUse, vol.Device, id, mps)
		}
	}
	if err := d.backend.Delete(ctx, id); err != nil {
		return err
	}
	d.metrics.DeleteVolume(id)
	klog.InfoS("deleted volume", "volumeID", id, "name", vol.Meta[metaName])
	return nil
}

func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	return reply(d.validateVolumeCapabilities(ctx, req))
}

func (d *Driver) validateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if err := required("volume_id", id); err != nil {
		return nil, err
	}
	caps := req.GetVolumeCapabilities()
	if len(caps) == 0 {
		return nil, fmt.Errorf("%w: volume capabilities are required", ErrInvalidArgument)
	}
	vol, err := d.lookupVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := checkCapabilities(caps); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if err := vol.spec.checkFSType(caps...); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if len(req.GetParameters()) > 0 {
		asked, err := parseSpec(req.GetParameters())
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
		if err := compatible(vol.BackendVolume, vol.Meta[metaName], asked, nil); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: caps,
		Parameters:         req.GetParameters(),
	}}, nil
}

func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil {
		if n, ok := t.GetSegments()[TopologyKey]; !ok || n != d.opts.NodeID {
			return &csi.GetCapacityResponse{}, nil
		}
	}
	if len(req.GetParameters()) == 0 {
		avail, err := d.backend.Capacity(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return &csi.GetCapacityResponse{AvailableCapacity: avail}, nil
	}
	spec, err := parseSpec(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	// Only the space that can give the class its atomic writes counts, so
	// the scheduler places the class's volumes where staging succeeds.
	avail, err := d.capacityFor(ctx, spec)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: avail}, nil
}

// ListVolumes pages through volumes sorted by ID; the token is the last ID
// of the previous page, so deleting a listed volume does not shift pages.
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	vols, err := d.volumesFrom(ctx, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &csi.ListVolumesResponse{}
	for _, v := range vols {
		if req.GetMaxEntries() > 0 && len(resp.Entries) == int(req.GetMaxEntries()) {
			resp.NextToken = resp.Entries[len(resp.Entries)-1].Volume.VolumeId
			break
		}
		cv := d.csiVolume(v)
		// Listing also shows what staging verified, for operators and tools.
		for _, k := range []string{metaVerifiedAtomic, metaVerifiedUnitMin, metaVerifiedUnitMax, metaVerifiedHardware} {
			if val, ok := v.Meta[k]; ok {
				cv.VolumeContext[k] = val
			}
		}
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: cv})
	}
	return resp, nil
}

// volumesFrom lists the volumes, sorted by ID, that follow the paging token
// tok (all of them when tok is empty).
func (d *Driver) volumesFrom(ctx context.Context, maxEntries int32, tok string) ([]BackendVolume, error) {
	if maxEntries < 0 {
		return nil, fmt.Errorf("%w: max_entries must not be negative", ErrInvalidArgument)
	}
	if tok != "" && !validVolumeID(tok) {
		return nil, fmt.Errorf("%w: starting_token %q was not issued by this driver", ErrInvalidToken, tok)
	}
	vols, err := d.backend.List(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].ID < vols[j].ID })
	start := sort.Search(len(vols), func(i int) bool { return tok == "" || vols[i].ID > tok })
	return vols[start:], nil
}

func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	return reply(d.controllerExpand(ctx, req))
}

func (d *Driver) controllerExpand(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := required("volume_id", id); err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, fmt.Errorf("%w: capacity_range is required", ErrInvalidArgument)
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapability(c); err != nil {
			return nil, err
		}
	}
	if d.expansionOnly() {
		// The volume lives on a node this controller cannot reach: accept
		// the new size and let NodeExpandVolume grow the backing volume
		// (to the node's exact granularity) and then the filesystem.
		size, err := d.volumeSize(req.GetCapacityRange(), volumeSpec{})
		if err != nil {
			return nil, err
		}
		klog.InfoS("expansion accepted; the node grows the volume", "volumeID", id, "sizeBytes", size)
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: true}, nil
	}
	vol, release, err := d.lockVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	defer release()
	size, err := d.volumeSize(req.GetCapacityRange(), vol.spec)
	if err != nil {
		return nil, err
	}
	if size > vol.SizeBytes {
		if vol.BackendVolume, err = d.expandPlaced(ctx, vol.BackendVolume, size, vol.spec); err != nil {
			return nil, fmt.Errorf("expand volume %s to %d bytes: %w", id, size, err)
		}
		if vol.SizeBytes < size {
			return nil, fmt.Errorf("expand volume %s: the backend grew it to %d bytes, below the %d requested", id, vol.SizeBytes, size)
		}
		klog.InfoS("expanded volume", "volumeID", id, "sizeBytes", vol.SizeBytes)
	}
	return &csi.ControllerExpandVolumeResponse{
		CapacityBytes:         vol.SizeBytes,
		NodeExpansionRequired: req.GetVolumeCapability().GetBlock() == nil,
	}, nil
}

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	types := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	}
	if d.expansionOnly() {
		types = []csi.ControllerServiceCapability_RPC_Type{csi.ControllerServiceCapability_RPC_EXPAND_VOLUME}
	}
	for _, t := range types {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrVolumeNotFound) }
