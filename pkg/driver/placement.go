package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Capability-aware placement: which of the backend's devices can give a
// class its atomic writes, asked of the same probe and planner staging
// uses, so that GetCapacity, CreateVolume and NodeStageVolume agree.

// DeviceSpace is a device a backend carves volumes from.
type DeviceSpace struct {
	// Device is the block device volumes are carved from (an LVM physical
	// volume), or a description of it when Limits is set.
	Device string
	// FreeBytes is the space left on it for new volumes.
	FreeBytes int64
	// SizeBytes is the device's size (0 when unknown); with the device
	// number it keys the probe cache.
	SizeBytes int64
	// Offset is where the first volume may start on the device (LVM's
	// pe_start) and Step the distance between possible starts (the extent
	// size): a volume placed here is aligned to what both are aligned to.
	Offset, Step int64
	// Limits, when set, are the limits every volume placed here has, and
	// Device is not probed (loop devices have no hardware atomic writes).
	Limits *untorn.DeviceLimits
}

// spaceLister is a backend that says which devices it carves from.
type spaceLister interface {
	Spaces(ctx context.Context) ([]DeviceSpace, error)
}

// placedBackend is a backend that can create and grow a volume on chosen
// devices only (lvcreate and lvextend take the physical volumes to use).
type placedBackend interface {
	CreateOn(ctx context.Context, id string, sizeBytes int64, meta map[string]string, devices []string) (BackendVolume, error)
	ExpandOn(ctx context.Context, id string, sizeBytes int64, devices []string) (BackendVolume, error)
}

// AtomicTopologyPrefix prefixes the topology segments NodeGetInfo adds for
// each atomic write unit the node can give in hardware:
// atomic.untorn.csi.dev/16Ki = "hardware". The value never changes (the
// kubelet refuses a driver whose topology value differs from the node's
// label), only the set of keys does.
const (
	AtomicTopologyPrefix = "atomic.untorn.csi.dev/"
	atomicTopologyValue  = "hardware"
)

// probeTTL bounds how long a cached probe is used even when the device's
// number and size have not changed.
const probeTTL = 10 * time.Minute

// placer caches what placement reads from the devices.
type placer struct {
	mu     sync.Mutex
	probes map[string]probeEntry

	topoOnce sync.Once
	topo     map[string]string
}

type probeEntry struct {
	rdev, size uint64
	at         time.Time
	limits     untorn.DeviceLimits
}

func newPlacer() *placer { return &placer{probes: map[string]probeEntry{}} }

// probeSpace returns the limits of the device of s, from the cache while the device
// number and size are the ones seen when it was probed.
func (d *Driver) probeSpace(s DeviceSpace) (untorn.DeviceLimits, error) {
	if s.Limits != nil {
		return *s.Limits, nil
	}
	rdev := deviceNumber(s.Device)
	p := d.placer
	p.mu.Lock()
	e, ok := p.probes[s.Device]
	p.mu.Unlock()
	if ok && e.rdev == rdev && e.size == uint64(s.SizeBytes) && time.Since(e.at) < probeTTL {
		return e.limits, nil
	}
	l, err := d.atomic.Probe(s.Device)
	if err != nil {
		return untorn.DeviceLimits{}, err
	}
	p.mu.Lock()
	p.probes[s.Device] = probeEntry{rdev: rdev, size: uint64(s.SizeBytes), at: time.Now(), limits: l}
	p.mu.Unlock()
	return l, nil
}

// placedLimits are the limits of a volume placed on s: the device's, with
// the volume's start modelled as the device's start plus Offset and a
// multiple of Step, so the planner's alignment checks see the real offset.
func placedLimits(l untorn.DeviceLimits, s DeviceSpace) untorn.DeviceLimits {
	if s.Offset <= 0 && s.Step <= 0 {
		return l
	}
	start := l.StartBytes() + uint64(max(s.Offset, 0))
	a := start | uint64(max(s.Step, 0))
	if a == 0 {
		return l
	}
	// Every possible start is aligned to the largest power of two that
	// divides both the first start and the step.
	a &= -a
	l.Partition, l.StartSector = true, a/512
	return l
}

// placement is where a class's volumes can go on this node.
type placement struct {
	// known is false when the backend cannot say (then nothing is refused).
	known  bool
	spaces []DeviceSpace
	// fits are the spaces whose plan for the class succeeds under
	// atomicPolicy require; reasons say why the others do not.
	fits    []DeviceSpace
	reasons []string
}

func (p placement) free(spaces []DeviceSpace) int64 {
	var n int64
	for _, s := range spaces {
		n += max(s.FreeBytes, 0)
	}
	return n
}

func devices(spaces []DeviceSpace) []string {
	out := make([]string, 0, len(spaces))
	for _, s := range spaces {
		out = append(out, s.Device)
	}
	return out
}

// place asks the planner, for each of the backend's devices, whether a
// volume of spec placed there would get its atomic writes.
func (d *Driver) place(ctx context.Context, spec volumeSpec) (placement, error) {
	lister, ok := d.backend.(spaceLister)
	if !ok {
		return placement{}, nil
	}
	spaces, err := lister.Spaces(ctx)
	if err != nil {
		return placement{}, err
	}
	p := placement{known: true, spaces: spaces}
	req := spec.planRequest()
	req.Policy = untorn.PolicyRequire
	for _, s := range spaces {
		l, err := d.probeSpace(s)
		if err != nil {
			klog.V(4).InfoS("cannot probe a device of the backend", "device", s.Device, "err", err)
			p.reasons = append(p.reasons, fmt.Sprintf("probe %s: %v", s.Device, err))
			continue
		}
		if _, err := d.atomic.Plan(placedLimits(l, s), req, s.Device); err != nil {
			if errors.Is(err, untorn.ErrInvalidFSType) || errors.Is(err, untorn.ErrInvalidPolicy) ||
				errors.Is(err, untorn.ErrInvalidSource) || errors.Is(err, untorn.ErrNotPowerOfTwo) {
				return placement{}, fmt.Errorf("%w: %w", ErrInvalidParameter, err)
			}
			p.reasons = append(p.reasons, err.Error())
			continue
		}
		p.fits = append(p.fits, s)
	}
	return p, nil
}

// capacityFor is the space this node can give to volumes of spec: under
// atomicPolicy require only the devices on which the planner can give the
// class its atomic writes count; under prefer every device does.
func (d *Driver) capacityFor(ctx context.Context, spec volumeSpec) (int64, error) {
	p, err := d.place(ctx, spec)
	if err != nil {
		return 0, err
	}
	if !p.known {
		return d.backend.Capacity(ctx)
	}
	if spec.Policy == untorn.PolicyRequire {
		if len(p.fits) == 0 {
			klog.V(4).InfoS("no capacity for a class on this node", "class", spec.describe(), "reasons", p.reasons)
		}
		return p.free(p.fits), nil
	}
	return p.free(p.spaces), nil
}

// devicesFor picks the devices a volume of spec and size may be carved
// from: nil for any of the backend's devices. Under atomicPolicy require
// it refuses (ErrNoSpace, naming the limit) when no device can give the
// class its atomic writes or those that can lack the space; under prefer
// it keeps to those devices when they have the space.
func (d *Driver) devicesFor(ctx context.Context, spec volumeSpec, size int64) ([]string, error) {
	p, err := d.place(ctx, spec)
	if err != nil || !p.known {
		return nil, err
	}
	_, placed := d.backend.(placedBackend)
	if spec.Policy == untorn.PolicyRequire {
		if len(p.fits) == 0 {
			return nil, fmt.Errorf("%w on node %s for %s (atomicPolicy require): %s",
				ErrNoSpace, d.opts.NodeID, spec.describe(), strings.Join(p.reasons, "; "))
		}
		if free := p.free(p.fits); free < size {
			return nil, fmt.Errorf("%w on node %s for %s (atomicPolicy require): %d bytes requested, %d free on %s, the devices that can give them",
				ErrNoSpace, d.opts.NodeID, spec.describe(), size, free, strings.Join(devices(p.fits), ", "))
		}
	} else if len(p.fits) == 0 || p.free(p.fits) < size {
		return nil, nil
	}
	if len(p.fits) == len(p.spaces) || !placed {
		return nil, nil
	}
	return devices(p.fits), nil
}

// createPlaced carves a new volume on the devices that can give it its
// atomic writes (see devicesFor).
func (d *Driver) createPlaced(ctx context.Context, id string, size int64, meta map[string]string, spec volumeSpec) (BackendVolume, error) {
	devs, err := d.devicesFor(ctx, spec, size)
	if err != nil {
		return BackendVolume{}, err
	}
	if pb, ok := d.backend.(placedBackend); ok && devs != nil {
		klog.V(4).InfoS("placing volume on the devices that can give its atomic writes", "volumeID", id, "devices", devs)
		return pb.CreateOn(ctx, id, size, meta, devs)
	}
	return d.backend.Create(ctx, id, size, meta)
}

// expandPlaced grows a volume, onto devices that can give it its atomic
// writes only (a linear LV extended onto a weaker device gets that
// device's smaller limits).
func (d *Driver) expandPlaced(ctx context.Context, vol BackendVolume, size int64, spec volumeSpec) (BackendVolume, error) {
	id := vol.ID
	pb, ok := d.backend.(placedBackend)
	if !ok || size <= vol.SizeBytes {
		return d.backend.Expand(ctx, id, size)
	}
	p, err := d.place(ctx, spec)
	if err != nil {
		return BackendVolume{}, err
	}
	if !p.known || len(p.fits) == len(p.spaces) || (len(p.fits) == 0 && spec.Policy != untorn.PolicyRequire) {
		return d.backend.Expand(ctx, id, size)
	}
	if len(p.fits) == 0 {
		return BackendVolume{}, fmt.Errorf("%w on node %s to grow %s (atomicPolicy require): %s",
			ErrNoSpace, d.opts.NodeID, spec.describe(), strings.Join(p.reasons, "; "))
	}
	return pb.ExpandOn(ctx, id, size, devices(p.fits))
}

// nodeTopology is the node's topology: its node key, and one
// atomic.untorn.csi.dev/<unit> = "hardware" segment for each atomic write
// unit from 4Ki to 1Mi that some device of the backend can give in
// hardware (to ext4, or to XFS with atomicSource hardware). It is worked
// out once per process, so the kubelet's registration and the
// provisioner's capacity objects see the same segments.
func (d *Driver) nodeTopology(ctx context.Context) *csi.Topology {
	p := d.placer
	p.topoOnce.Do(func() {
		p.topo = map[string]string{TopologyKey: d.opts.NodeID}
		for _, u := range d.hardwareUnits(ctx) {
			p.topo[AtomicTopologyPrefix+untorn.FormatSize(u)] = atomicTopologyValue
		}
	})
	return &csi.Topology{Segments: maps.Clone(p.topo)}
}

// hardwareUnits lists the units from minUnit to maxUnit that some device
// of the backend can give in hardware.
func (d *Driver) hardwareUnits(ctx context.Context) []uint64 {
	var units []uint64
	for u := uint64(minUnit); u <= maxUnit; u *= 2 {
		for _, fs := range []untorn.FSType{untorn.FSExt4, untorn.FSXFS} {
			p, err := d.place(ctx, volumeSpec{FSType: fs, Unit: u, Policy: untorn.PolicyRequire, Source: untorn.SourceHardware})
			if err != nil {
				klog.ErrorS(err, "cannot list the backend's devices; the node publishes no atomic write units", "backend", d.backend.Name())
				return nil
			}
			if len(p.fits) > 0 {
				units = append(units, u)
				break
			}
		}
	}
	return units
}
