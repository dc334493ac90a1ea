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

// Staging: check the request, lock and look the volume up, attach and
// probe its device, then stage it as a raw block device (stageBlock) or as
// a filesystem (stageFilesystem: plan, format and mount, verify), and
// record what was verified (record).

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
	return reply(&csi.NodeStageVolumeResponse{}, d.nodeStage(ctx, req))
}

// stageRequest is a checked NodeStageVolume request.
type stageRequest struct {
	id, staging string
	cap         *csi.VolumeCapability
	block       bool
	readOnly    bool
}

func (d *Driver) checkStageRequest(req *csi.NodeStageVolumeRequest) (stageRequest, error) {
	r := stageRequest{id: req.GetVolumeId(), cap: req.GetVolumeCapability()}
	if err := required("volume_id", r.id); err != nil {
		return r, err
	}
	if err := checkCapability(r.cap); err != nil {
		return r, err
	}
	r.block = r.cap.GetBlock() != nil
	r.readOnly = r.cap.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	kind := pathDir
	if r.block {
		kind = pathAny // nothing is created or mounted at a block volume's staging path
	}
	var err error
	r.staging, err = d.nodePath("staging_target_path", req.GetStagingTargetPath(), kind)
	return r, err
}

func (d *Driver) nodeStage(ctx context.Context, req *csi.NodeStageVolumeRequest) error {
	r, err := d.checkStageRequest(req)
	if err != nil {
		return err
	}
	vol, release, err := d.lockVolume(ctx, r.id)
	if err != nil {
		return err
	}
	defer release()
	if err := vol.spec.checkFSType(r.cap); err != nil {
		return err
	}
	if err := d.claimedByOther(r.id, "staging_target_path", r.staging); err != nil {
		return err
	}
	tm := newPhases()
	defer tm.log(r.id)
	st, recorded, err := d.attachAndProbe(ctx, vol, r, tm)
	if err != nil {
		return err
	}
	if r.block {
		return d.stageBlock(ctx, vol, st)
	}
	return d.stageFilesystem(ctx, vol, r, st, recorded, tm)
}

// attachAndProbe attaches the volume's device, refuses a volume still
// staged at another path and probes the device: the start of the staging
// record. recorded says the node's record already has the volume staged
// at this path.
func (d *Driver) attachAndProbe(ctx context.Context, vol volume, r stageRequest, tm *phases) (stagedVolume, bool, error) {
	prev, hadPrev, err := d.state.get(vol.ID)
	if err != nil {
		return stagedVolume{}, false, err
	}
	dev, err := d.backend.Attach(ctx, vol.ID)
	if err != nil {
		return stagedVolume{}, false, fmt.Errorf("attach volume %s: %w", vol.ID, err)
	}
	tm.mark("attach")
	if err := d.stagedElsewhere(prev, hadPrev, r.staging, dev); err != nil {
		return stagedVolume{}, false, err
	}
	limits, err := d.atomic.Probe(dev)
	if err != nil {
		return stagedVolume{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	st := stagedVolume{VolumeID: vol.ID, StagingPath: r.staging, Device: dev, Policy: string(vol.spec.Policy), Unit: vol.spec.Unit, Limits: limits}
	recorded := hadPrev && prev.StagingPath == r.staging
	if recorded {
		st.Targets = prev.Targets
	}
	return st, recorded, nil
}

// stageBlock stages a raw block volume: nothing to format or mount; the
// record says whether the device gives the unit's atomic writes itself.
func (d *Driver) stageBlock(ctx context.Context, vol volume, st stagedVolume) error {
	spec, l := vol.spec, st.Limits
	st.Block = true
	st.Hardware = l.HardwareAtomic() && l.UnitMin <= spec.Unit && spec.Unit <= l.UnitMax
	st.Verified = untorn.Verification{Atomic: st.Hardware, UnitMin: uint32(l.UnitMin), UnitMax: uint32(l.UnitMax), Unit: spec.Unit}
	if !st.Hardware {
		st.Verified.Reason = fmt.Sprintf("device %s offers no hardware atomic writes of %d bytes (unit min %d, max %d)",
			st.Device, spec.Unit, l.UnitMin, l.UnitMax)
		if spec.Policy == untorn.PolicyRequire {
			return fmt.Errorf("%w: %s", ErrAtomicUnavailable, st.Verified.Reason)
		}
	}
	if vol.Meta[metaFormatState] == formatBlank {
		// From now on the device may hold the pod's data.
		if err := d.backend.SetMeta(ctx, vol.ID, map[string]string{metaFormatState: formatRaw}); err != nil {
			return fmt.Errorf("record format state of volume %s: %w", vol.ID, err)
		}
	}
	return d.record(ctx, vol, st)
}

// stageFilesystem stages a mount volume: plan, format (a blank volume
// only) and mount, verify, record. A volume already mounted there from its
// device and recorded is staged; one mounted but not recorded (the node's
// record was lost) is verified and recorded again.
func (d *Driver) stageFilesystem(ctx context.Context, vol volume, r stageRequest, st stagedVolume, recorded bool, tm *phases) error {
	mounted, err := d.stagingMounted(vol.ID, r.staging, st.Device)
	if err != nil {
		return err
	}
	if mounted && recorded {
		klog.V(4).InfoS("volume already staged", "volumeID", vol.ID, "stagingPath", r.staging)
		return nil
	}
	plan, err := d.planStage(vol, st)
	if err != nil {
		return err
	}
	st.FSType, st.Plan = string(vol.spec.FSType), &plan
	tm.mark("plan")
	if !mounted {
		if err := d.formatAndMount(ctx, vol, r, st.Device, plan); err != nil {
			return err
		}
		tm.mark("formatAndMount")
	}
	v, err := d.verifyStaged(vol, r, plan)
	tm.mark("verify")
	if err != nil {
		return err
	}
	st.Verified, st.Hardware = v, v.Atomic && v.Hardware
	defer tm.mark("record")
	return d.record(ctx, vol, st)
}

// stagingMounted makes the staging directory and says whether it holds
// the volume's device already; a mount of anything else there, or the
// device mounted elsewhere, is refused.
func (d *Driver) stagingMounted(id, staging, dev string) (bool, error) {
	if err := mkdirNoFollow("staging_target_path", staging); err != nil {
		return false, err
	}
	mp, err := d.mountAt(staging)
	if err != nil {
		return false, err
	}
	if mp != nil {
		if !fromSource(mp, dev) {
			return false, fmt.Errorf("%w: %s already holds %s, not volume %s (%s)", ErrAlreadyExists, staging, mp.Device, id, dev)
		}
		return true, nil
	}
	others, err := d.mountsOf(dev)
	if err != nil {
		return false, err
	}
	if len(others) > 0 {
		return false, fmt.Errorf("%w: device %s of volume %s is already mounted at %v; unstage it there first", ErrVolumeInUse, dev, id, others)
	}
	return false, nil
}

// planStage asks the planner for the volume's format and mount options on
// the probed device; a device that cannot give what the class requires is
// refused before anything is formatted or mounted.
func (d *Driver) planStage(vol volume, st stagedVolume) (untorn.Plan, error) {
	plan, err := d.atomic.Plan(st.Limits, vol.spec.planRequest(), st.Device)
	if err != nil {
		if errors.Is(err, untorn.ErrInvalidFSType) || errors.Is(err, untorn.ErrInvalidPolicy) {
			return untorn.Plan{}, err
		}
		return untorn.Plan{}, fmt.Errorf("%w: volume %s on %s: %w", ErrAtomicUnavailable, vol.ID, st.Device, err)
	}
	return plan, nil
}

// formatAndMount formats a blank volume with the plan's options and mounts
// it at the staging path with the plan's and the capability's options.
func (d *Driver) formatAndMount(ctx context.Context, vol volume, r stageRequest, dev string, plan untorn.Plan) error {
	opts := append(append([]string{}, plan.MountOptions...), r.cap.GetMount().GetMountFlags()...)
	if r.readOnly {
		opts = append(opts, "ro")
	}
	if err := d.prepareAndMount(ctx, vol.BackendVolume, dev, r.staging, vol.spec.FSType, plan.FormatOptions, opts, r.readOnly); err != nil {
		return fmt.Errorf("stage volume %s (%s) at %s: %w", vol.ID, dev, r.staging, err)
	}
	return nil
}

// verifyStaged checks that the mounted filesystem gives the class's atomic
// writes (with policy require, and in hardware with atomicSource
// hardware); on failure it unmounts the staging path. A read-only volume
// is not written to, so not verified.
func (d *Driver) verifyStaged(vol volume, r stageRequest, plan untorn.Plan) (untorn.Verification, error) {
	spec := vol.spec
	if r.readOnly {
		return untorn.Verification{Unit: spec.Unit, Reason: "mounted read-only: no write verification"}, nil
	}
	d.cowHint(vol.ID, r.staging, plan)
	v, err := d.atomic.Verify(r.staging, spec.Unit)
	require := spec.Policy == untorn.PolicyRequire
	if err == nil && !v.Atomic && require {
		err = fmt.Errorf("%w: %s at %s does not give atomic writes of %d bytes: %s", ErrAtomicUnavailable, spec.FSType, r.staging, spec.Unit, v.Reason)
		if v.Cause != nil {
			err = fmt.Errorf("%w (%w)", err, v.Cause)
		}
	}
	if err == nil && v.Atomic && !v.Hardware && spec.Source == untorn.SourceHardware && require {
		err = fmt.Errorf("%w: %s at %s gives atomic writes of %d bytes only in software, and the volume asks for %s %s",
			ErrAtomicUnavailable, spec.FSType, r.staging, spec.Unit, ParamAtomicSource, untorn.SourceHardware)
	}
	if err != nil {
		d.metrics.VerificationFailed(vol.ID)
		if uerr := d.mounter.Unmount(r.staging); uerr != nil {
			klog.ErrorS(uerr, "unmount after failed verification", "volumeID", vol.ID, "stagingPath", r.staging)
		}
		return untorn.Verification{}, fmt.Errorf("verify volume %s: %w", vol.ID, err)
	}
	return v, nil
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

// record keeps what staging verified in two places, each read where the
// other is not: the node's state file (what publish, stats, health and
// unstage act on; it is lost with the node's state directory) and the
// volume's backend metadata (what ListVolumes and the controller's volume
// health report, across plugin restarts and node state loss). Writing the
// metadata costs an lvchange on LVM, so it is written only when a value
// changed: restaging a volume with the same result writes nothing there.
func (d *Driver) record(ctx context.Context, vol volume, st stagedVolume) error {
	if err := d.state.put(st); err != nil {
		return fmt.Errorf("record staged volume: %w", err)
	}
	v := st.Verified
	if err := d.setMetaChanged(ctx, vol.BackendVolume, map[string]string{
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

// setMetaChanged stores the keys of meta whose values differ from what
// vol holds (an empty value removes a key); nothing when none differ.
func (d *Driver) setMetaChanged(ctx context.Context, vol BackendVolume, meta map[string]string) error {
	changed := map[string]string{}
	for k, v := range meta {
		if vol.Meta[k] != v {
			changed[k] = v
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return d.backend.SetMeta(ctx, vol.ID, changed)
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
