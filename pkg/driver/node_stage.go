package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

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
	id, staging, vc := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if err := checkPath("staging_target_path", staging); err != nil {
		return err
	}
	if err := checkCapability(vc, ""); err != nil {
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
	tm := newPhases()
	defer tm.log(id)
	dev, err := d.backend.Attach(ctx, id)
	if err != nil {
		return fmt.Errorf("attach volume %s: %w", id, err)
	}
	tm.mark("attach")
	limits, err := d.atomic.Probe(dev)
	if err != nil {
		return fmt.Errorf("probe %s: %w", dev, err)
	}
	st := stagedVolume{VolumeID: id, StagingPath: staging, Device: dev, Policy: string(spec.Policy), Unit: spec.Unit, Limits: limits}

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
		return d.record(ctx, st)
	}

	if err := os.MkdirAll(staging, 0o750); err != nil {
		return fmt.Errorf("create staging_target_path: %w", err)
	}
	mounted, err := d.mounter.IsMountPoint(staging)
	if err != nil {
		return fmt.Errorf("check mount at %s: %w", staging, err)
	}
	if mounted {
		src, _, err := mount.GetDeviceNameFromMount(d.mounter, staging)
		if err != nil {
			return fmt.Errorf("find device mounted at %s: %w", staging, err)
		}
		if src != dev {
			return fmt.Errorf("%w: %s already holds %s, not volume %s (%s)", ErrAlreadyExists, staging, src, id, dev)
		}
		if _, ok, err := d.state.get(id); err != nil || ok {
			klog.V(4).InfoS("volume already staged", "volumeID", id, "stagingPath", staging)
			return err
		}
		// Mounted but not recorded (state lost): verify and record below.
	}

	plan, err := d.atomic.Plan(limits, untorn.PlanRequest{FSType: spec.FSType, Unit: spec.Unit, Cluster: spec.Cluster, Policy: spec.Policy}, dev)
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
		if err := d.mounter.FormatAndMountSensitiveWithFormatOptions(dev, staging, string(spec.FSType), opts, nil, plan.FormatOptions); err != nil {
			return fmt.Errorf("format and mount %s at %s: %w", dev, staging, err)
		}
		tm.mark("formatAndMount")
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

func (d *Driver) nodeUnstage(_ context.Context, req *csi.NodeUnstageVolumeRequest) error {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" {
		return fmt.Errorf("%w: volume_id is required", ErrInvalidArgument)
	}
	if err := checkPath("staging_target_path", staging); err != nil {
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
	if err := d.unmountAll(staging); err != nil {
		return err
	}
	if err := d.state.remove(id); err != nil {
		return err
	}
	d.metrics.DeleteVolume(id)
	klog.InfoS("unstaged volume", "volumeID", id, "stagingPath", staging)
	return nil
}

// unmountAll unmounts p until it is no mount point; a missing p is fine.
func (d *Driver) unmountAll(p string) error {
	for i := 0; i < 8; i++ {
		mounted, err := d.mounter.IsMountPoint(p)
		if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check mount at %s: %w", p, err)
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
