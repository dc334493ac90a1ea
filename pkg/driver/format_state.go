package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// The format state is kept in the volume's backend metadata. CreateVolume
// marks a new volume blank; staging formats only a blank volume (wiping
// what an interrupted mkfs left) and records formatted after mkfs
// succeeded and before the volume is mounted, so a volume that may hold
// data is never formatted again.
const (
	metaFormatState = "formatState"
	// formatBlank: created blank by this driver, formatting never finished.
	formatBlank = "blank"
	// formatFormatted: mkfs finished; only ever mounted from now on.
	formatFormatted = "formatted"
	// formatRaw: handed out as a raw block device before it was formatted;
	// it may hold data, so it is never formatted.
	formatRaw = "raw"
)

// signature is what blkid finds on a device.
type signature struct{ fsType, ptType, label string }

func (s signature) empty() bool { return s.fsType == "" && s.ptType == "" }

func (s signature) String() string {
	switch {
	case s.ptType != "":
		return fmt.Sprintf("a %s partition table", s.ptType)
	case s.fsType != "" && s.label != "":
		return fmt.Sprintf("a %s filesystem (label %s)", s.fsType, s.label)
	case s.fsType != "":
		return fmt.Sprintf("a %s filesystem", s.fsType)
	}
	return "no signature blkid recognises"
}

// probeSignature runs blkid in low-level probe mode on dev; exit status 2
// means nothing was found. Any other failure is an error: nothing is
// formatted on a device that could not be probed.
func (d *Driver) probeSignature(ctx context.Context, dev string) (signature, error) {
	out, err := d.command(ctx, "blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-s", "LABEL", "-o", "export", dev)
	var ee exec.ExitError
	if errors.As(err, &ee) && ee.ExitStatus() == 2 {
		return signature{}, nil
	}
	if err != nil {
		return signature{}, err
	}
	var s signature
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch k {
		case "TYPE":
			s.fsType = v
		case "PTTYPE":
			s.ptType = v
		case "LABEL":
			s.label = v
		}
	}
	return s, nil
}

// prepareAndMount formats dev when the volume's format state allows it and
// mounts it at target. Nothing writes to a device (no wipefs, mkfs or
// fsck) unless it is a blank volume of this driver or holds a filesystem
// of the volume's type.
func (d *Driver) prepareAndMount(ctx context.Context, vol BackendVolume, dev, target string, fs untorn.FSType, formatOpts, mountOpts []string, readOnly bool) error {
	state := vol.Meta[metaFormatState]
	found := "a filesystem it has just made"
	switch state {
	case formatBlank:
		if readOnly {
			return mount.NewMountError(mount.UnformattedReadOnly, "volume %s was never formatted and cannot be staged read-only", vol.ID)
		}
		// Wipe what an interrupted mkfs may have left, then format.
		if _, err := d.command(ctx, "wipefs", "-a", dev); err != nil {
			return err
		}
		if err := d.mkfs(ctx, vol.ID, dev, fs, formatOpts); err != nil {
			return err
		}
	case formatFormatted, formatRaw, "":
		var err error
		if found, err = d.prepareFound(ctx, vol, dev, fs, formatOpts, readOnly); err != nil {
			return err
		}
	default:
		return mount.NewMountError(mount.FilesystemMismatch, "volume %s has an unknown %s %q; refusing to format or mount it", vol.ID, metaFormatState, state)
	}
	if err := d.mounter.Mount(dev, target, string(fs), append(mountOpts, "defaults")); err != nil {
		return fmt.Errorf("device %s holds %s (format state %q) but it does not mount as %s; it is not formatted again: %w",
			dev, found, state, fs, err)
	}
	return nil
}

// prepareFound decides from what blkid finds on the device of a volume
// that is not blank (formatted, used raw, or from an earlier version with
// no format state) whether it can be mounted: its own filesystem is
// checked (ext4: fsck) and mounted, a truly blank device of an earlier
// version is formatted, anything else is refused. It returns what was found.
func (d *Driver) prepareFound(ctx context.Context, vol BackendVolume, dev string, fs untorn.FSType, formatOpts []string, readOnly bool) (string, error) {
	state := vol.Meta[metaFormatState]
	sig, err := d.probeSignature(ctx, dev)
	if err != nil {
		return "", fmt.Errorf("probe %s for a filesystem: %w", dev, err)
	}
	switch {
	case sig.fsType == string(fs) && sig.ptType == "":
		if !readOnly && fs == untorn.FSExt4 {
			return sig.String(), d.fsck(ctx, dev)
		}
		return sig.String(), nil
	case state == "" && sig.empty():
		// A volume from an earlier version, with no format state:
		// format it only when it is truly blank.
		zero, err := deviceHeadTailZero(dev)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", dev, err)
		}
		if !zero {
			return "", mount.NewMountError(mount.FilesystemMismatch,
				"device %s of volume %s holds data without a signature blkid recognises; refusing to format or mount it", dev, vol.ID)
		}
		if readOnly {
			return "", mount.NewMountError(mount.UnformattedReadOnly, "volume %s was never formatted and cannot be staged read-only", vol.ID)
		}
		return sig.String(), d.mkfs(ctx, vol.ID, dev, fs, formatOpts)
	case state == formatFormatted:
		return "", mount.NewMountError(mount.FilesystemMismatch,
			"device %s of volume %s holds %s, not the %s this volume was formatted with; refusing to format or mount it", dev, vol.ID, sig, fs)
	case state == formatRaw:
		return "", mount.NewMountError(mount.FilesystemMismatch,
			"volume %s was used as a raw block device and device %s holds %s, not %s; refusing to format (it may hold data) or mount it", vol.ID, dev, sig, fs)
	}
	return "", mount.NewMountError(mount.FilesystemMismatch,
		"device %s of volume %s holds %s, not %s; refusing to format or mount it", dev, vol.ID, sig, fs)
}

// mkfs formats dev with the planned options and records the volume as
// formatted before anything can be written to it.
func (d *Driver) mkfs(ctx context.Context, id, dev string, fs untorn.FSType, formatOpts []string) error {
	args := append([]string{}, formatOpts...)
	if fs == untorn.FSXFS {
		args = append(args, "-f", dev)
	} else {
		args = append(args, "-F", "-m0", dev)
	}
	klog.InfoS("formatting blank volume", "volumeID", id, "device", dev, "fsType", fs, "args", args)
	if _, err := d.command(ctx, "mkfs."+string(fs), args...); err != nil {
		return fmt.Errorf("format %s as %s: %w", dev, fs, err)
	}
	if err := d.backend.SetMeta(ctx, id, map[string]string{metaFormatState: formatFormatted}); err != nil {
		return fmt.Errorf("record format state of volume %s: %w", id, err)
	}
	return nil
}

// fsck checks and repairs an ext4 filesystem of the volume before mounting,
// with mount-utils' reading of fsck's exit status.
func (d *Driver) fsck(ctx context.Context, dev string) error {
	_, err := d.command(ctx, "fsck", "-a", dev)
	var ee exec.ExitError
	switch {
	case err == nil:
	case errors.Is(err, exec.ErrExecutableNotFound):
		klog.InfoS("fsck not found; mounting without a check", "device", dev)
	case errors.As(err, &ee) && ee.ExitStatus() == 1:
		klog.InfoS("fsck corrected errors", "device", dev)
	case errors.As(err, &ee) && ee.ExitStatus() == 4:
		return mount.NewMountError(mount.HasFilesystemErrors, "fsck found errors on %s it could not correct: %v", dev, err)
	case ctx.Err() != nil:
		return err
	default:
		klog.InfoS("fsck failed; mounting anyway", "device", dev, "err", err)
	}
	return nil
}

// command runs a command with runCommand.
func (d *Driver) command(ctx context.Context, name string, args ...string) (string, error) {
	return runCommand(ctx, d.exec, name, args...)
}
