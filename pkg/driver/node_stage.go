package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Metadata keys for the verified limits stored with a volume.
const (
	metaVerifiedAtomic   = "verifiedAtomic"
	metaVerifiedUnitMin  = "verifiedUnitMin"
	metaVerifiedUnitMax  = "verifiedUnitMax"
	metaVerifiedHardware = "verifiedHardware"
	// metaVerifyFailed is set when a later verification (NodeGetVolumeHealth)
	// failed; staging again clears it.
	metaVerifyFailed = "verifyFailed"
)

func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if err := d.nodeStage(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *Driver) nodeStage(ctx context.Context, req *csi.NodeStageVolumeRequest) error {
	id, vc := req.GetVolumeId(), req.GetVolumeCapability()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if err := checkCapability(vc, ""); err != nil {
		return err
	}
	kind := pathDir
	if vc.GetBlock() != nil {
		kind = pathAny // nothing is created or mounted at a block volume's staging path
	}
	staging, err := d.nodePath("staging_target_path", req.GetStagingTargetPath(), kind)
	if err != nil {
		return err
	}
	vol, release, err := d.lockVolume(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	spec, err := parseVolumeContext(vol.Meta)
	if err != nil {
		return err
	}
	if err := checkCapability(vc, string(spec.FSType)); err != nil {
		return err
	}
	if err := d.claimedByOther(id, "staging_target_path", staging); err != nil {
		return err
	}
	prev, hadPrev, err := d.state.get(id)
	if err != nil {
		return err
	}
	tm := newPhases()
	defer tm.log(id)
	dev, err := d.backend.Attach(ctx, id)
	if err != nil {
		return fmt.Errorf("attach volume %s: %w", id, err)
	}
	tm.mark("attach")
	if err := d.stagedElsewhere(prev, hadPrev, staging, dev); err != nil {
		return err
	}
	limits, err := d.atomic.Probe(dev)
	if err != nil {
		return fmt.Errorf("probe %s: %w", dev, err)
	}
	st := stagedVolume{VolumeID: id, StagingPath: staging, Device: dev, Policy: string(spec.Policy), Unit: spec.Unit, Limits: limits}
	if hadPrev && prev.StagingPath == staging {
		st.Targets = prev.Targets
	}

	if vc.GetBlock() != nil {
		// Raw block: nothing to format or mount; record what the device offers.
		st.Block = true
		st.Hardware = limits.HardwareAtomic() && limits.UnitMin <= spec.Unit && spec.Unit <= limits.UnitMax
		st.Verified = untorn.Verification{Atomic: st.Hardware, UnitMin: uint32(limits.UnitMin), UnitMax: uint32(limits.UnitMax), Unit: spec.Unit}
		if !st.Hardware {
			st.Verified.Reason = fmt.Sprintf("device %s offers no hardware atomic writes of %d bytes (unit min %d, max %d)",
				dev, spec.Unit, limits.UnitMin, limits.UnitMax)
			if spec.Policy == untorn.PolicyRequire {
				return fmt.Errorf("%w: %s", ErrAtomicUnavailable, st.Verified.Reason)
			}
		}
		if vol.Meta[metaFormatState] == formatBlank {
			// From now on the device may hold the pod's data.
			if err := d.backend.SetMeta(ctx, id, map[string]string{metaFormatState: formatRaw}); err != nil {
				return fmt.Errorf("record format state of volume %s: %w", id, err)
			}
		}
		return d.record(ctx, st)
	}

	if err := mkdirNoFollow("staging_target_path", staging); err != nil {
		return err
	}
	mp, err := d.mountAt(staging)
	if err != nil {
		return err
	}
	mounted := mp != nil
	if mounted {
		if !fromSource(mp, dev) {
			return fmt.Errorf("%w: %s already holds %s, not volume %s (%s)", ErrAlreadyExists, staging, mp.Device, id, dev)
		}
		if hadPrev && prev.StagingPath == staging {
			klog.V(4).InfoS("volume already staged", "volumeID", id, "stagingPath", staging)
			return nil
		}
		// Mounted but not recorded (state lost): verify and record below.
	} else if others, err := d.mountsOf(dev); err != nil {
		return err
	} else if len(others) > 0 {
		return fmt.Errorf("%w: device %s of volume %s is already mounted at %v; unstage it there first", ErrVolumeInUse, dev, id, others)
	}

	plan, err := d.atomic.Plan(limits, spec.planRequest(), dev)
	if err != nil {
		if errors.Is(err, untorn.ErrInvalidFSType) || errors.Is(err, untorn.ErrInvalidPolicy) {
			return err
		}
		// Nothing has been formatted or mounted.
		return fmt.Errorf("%w: volume %s on %s: %w", ErrAtomicUnavailable, id, dev, err)
	}
	st.FSType, st.Plan = string(spec.FSType), &plan
	readOnly := vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if !mounted {
		opts := append(append([]string{}, plan.MountOptions...), vc.GetMount().GetMountFlags()...)
		if readOnly {
			opts = append(opts, "ro")
		}
		tm.mark("plan")
		if err := d.prepareAndMount(ctx, vol, dev, staging, spec.FSType, plan.FormatOptions, opts, readOnly); err != nil {
			return fmt.Errorf("stage volume %s (%s) at %s: %w", id, dev, staging, err)
		}
		tm.mark("formatAndMount")
	}

	if !readOnly {
		d.cowHint(id, staging, plan)
	}
	if readOnly {
		st.Verified = untorn.Verification{Unit: spec.Unit, Reason: "mounted read-only: no write verification"}
	} else {
		v, err := d.atomic.Verify(staging, spec.Unit)
		tm.mark("verify")
		if err == nil && !v.Atomic && spec.Policy == untorn.PolicyRequire {
			err = fmt.Errorf("%w: %s at %s does not give atomic writes of %d bytes: %s", ErrAtomicUnavailable, spec.FSType, staging, spec.Unit, v.Reason)
			if v.Cause != nil {
				err = fmt.Errorf("%w (%w)", err, v.Cause)
			}
		}
		if err == nil && v.Atomic && !v.Hardware && spec.Source == untorn.SourceHardware && spec.Policy == untorn.PolicyRequire {
			err = fmt.Errorf("%w: %s at %s gives atomic writes of %d bytes only in software, and the volume asks for %s %s",
				ErrAtomicUnavailable, spec.FSType, staging, spec.Unit, ParamAtomicSource, untorn.SourceHardware)
		}
		if err != nil {
			d.metrics.VerificationFailed(id)
			if uerr := d.mounter.Unmount(staging); uerr != nil {
				klog.ErrorS(uerr, "unmount after failed verification", "volumeID", id, "stagingPath", staging)
			}
			return fmt.Errorf("verify volume %s: %w", id, err)
		}
		st.Verified = v
		st.Hardware = v.Atomic && v.Hardware
	}
	defer tm.mark("record")
	return d.record(ctx, st)
}

// stagedElsewhere refuses to stage a volume at a second path while it is
// still staged at the one recorded (a mount volume whose recorded staging
// path no longer holds its device is no longer staged there).
func (d *Driver) stagedElsewhere(prev stagedVolume, had bool, staging, dev string) error {
	if !had || prev.StagingPath == staging {
		return nil
	}
	if !prev.Block {
		mp, err := d.mountAt(prev.StagingPath)
		if err != nil {
			return err
		}
		if mp == nil || !fromSource(mp, dev) {
			return nil
		}
	}
	return fmt.Errorf("%w: volume %s is already staged at %s; unstage it there before staging it at %s",
		ErrVolumeInUse, prev.VolumeID, prev.StagingPath, staging)
}

// record stores the verified limits with the volume (backend metadata and
// the node state) and publishes them as metrics.
func (d *Driver) record(ctx context.Context, st stagedVolume) error {
	if err := d.state.put(st); err != nil {
		return fmt.Errorf("record staged volume: %w", err)
	}
	v := st.Verified
	if err := d.backend.SetMeta(ctx, st.VolumeID, map[string]string{
		metaVerifiedAtomic:   strconv.FormatBool(v.Atomic),
		metaVerifiedUnitMin:  strconv.FormatUint(uint64(v.UnitMin), 10),
		metaVerifiedUnitMax:  strconv.FormatUint(uint64(v.UnitMax), 10),
		metaVerifiedHardware: strconv.FormatBool(st.Hardware),
		metaVerifyFailed:     "false",
	}); err != nil {
		return fmt.Errorf("store verified limits: %w", err)
	}
	d.metrics.SetVolumeAtomic(st.VolumeID, uint64(v.UnitMin), uint64(v.UnitMax), v.Atomic, st.Hardware)
	klog.InfoS("staged volume", "volumeID", st.VolumeID, "device", st.Device, "block", st.Block, "fsType", st.FSType,
		"atomic", v.Atomic, "atomicMin", v.UnitMin, "atomicMax", v.UnitMax, "hardware", st.Hardware, "reason", v.Reason)
	return nil
}

func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if err := d.nodeUnstage(ctx, req); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *Driver) nodeUnstage(ctx context.Context, req *csi.NodeUnstageVolumeRequest) error {
	id := req.GetVolumeId()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	staging, err := d.nodePath("staging_target_path", req.GetStagingTargetPath(), pathAny)
	if err != nil {
		return err
	}
	if !validVolumeID(id) {
		return fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	release, err := d.inflight.acquire(id)
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

// volumeDevice is the device of a volume: the one recorded at staging, else
// the one the backend has attached ("" when none).
func (d *Driver) volumeDevice(ctx context.Context, id string, st stagedVolume, staged bool) (string, error) {
	if staged && st.Device != "" {
		return st.Device, nil
	}
	vol, err := d.backend.Get(ctx, id)
	if err != nil {
		return "", err
	}
	return vol.Device, nil
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

// phases times the steps of a call for V(4) logs.
type phases struct {
	last time.Time
	kv   []any
}

func newPhases() *phases { return &phases{last: time.Now()} }

func (p *phases) mark(name string) {
	now := time.Now()
	p.kv = append(p.kv, name, now.Sub(p.last))
	p.last = now
}

func (p *phases) log(id string) {
	klog.V(4).InfoS("stage timings", append([]any{"volumeID", id}, p.kv...)...)
}

// cowHint gives an XFS atomic volume the planned copy-on-write extent size
// hint on its root, so that files created from now on keep no speculative
// copy-on-write reservations around their atomic writes. Volumes formatted
// before the planner set the hint at mkfs time get it here. A failure is
// logged, not returned: the volume holds data and works without the hint.
func (d *Driver) cowHint(id, staging string, plan untorn.Plan) {
	if plan.FSType != untorn.FSXFS || plan.CoWExtSize == 0 {
		return
	}
	changed, err := d.atomic.SetCoWExtSize(staging, plan.CoWExtSize)
	switch {
	case err != nil:
		klog.ErrorS(err, "set XFS copy-on-write extent size hint", "volumeID", id, "stagingPath", staging, "cowExtSize", plan.CoWExtSize)
	case changed:
		klog.InfoS("set XFS copy-on-write extent size hint on a volume formatted without it", "volumeID", id, "stagingPath", staging, "cowExtSize", plan.CoWExtSize)
	}
}
