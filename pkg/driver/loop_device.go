package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// The loop backend's loop devices: finding, detaching, running losetup.

// loopDetachWait bounds how long Delete waits for a detached loop device
// to let go of its image (the kernel detaches a busy device lazily).
const loopDetachWait = 2 * time.Second

// detachAll detaches every loop device of the volume's image and checks
// that none is left; a device still attached (held open elsewhere) is
// ErrVolumeInUse and the image must then not be removed.
func (b *LoopBackend) detachAll(ctx context.Context, id string) ([]string, error) {
	devs, err := b.loopDevices(ctx, id)
	if err != nil || len(devs) == 0 {
		return nil, err
	}
	for _, dev := range devs {
		if _, err := b.run(ctx, "losetup", "--detach", dev); err != nil {
			// Fine when the device let go of the image meanwhile (a
			// lazy detach completing); the check below decides.
			klog.V(4).InfoS("losetup --detach failed", "device", dev, "err", err)
		}
	}
	deadline := time.Now().Add(loopDetachWait)
	for {
		left, err := b.loopDevices(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(left) == 0 {
			return devs, nil
		}
		if time.Now().After(deadline) {
			img, _, _ := b.paths(id)
			return nil, fmt.Errorf("%w: loop device %s still holds %s after losetup --detach: it is open elsewhere, or still mounted in a mount namespace created while it was mounted (removing the former mount point detaches such copies); the image is kept",
				ErrVolumeInUse, strings.Join(left, ", "), img)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// loopDevices lists the loop devices backed by the volume's image. It
// reads /sys/block/loop*/loop/backing_file (no process to start, which
// keeps staging cheap) and falls back to losetup when sysfs has no loop
// entries. Only the loop directory is resolved, never a symlink at the
// image's own path.
func (b *LoopBackend) loopDevices(ctx context.Context, id string) ([]string, error) {
	dir, err := filepath.EvalSymlinks(b.dir)
	if err != nil {
		return nil, err
	}
	want := filepath.Join(dir, id+".img")
	entries, err := filepath.Glob(filepath.Join(b.sysfs, "block", "loop*", "loop", "backing_file"))
	if err != nil || len(entries) == 0 {
		return b.loopDevicesLosetup(ctx, want)
	}
	var devs []string
	for _, e := range entries {
		data, err := os.ReadFile(e)
		if err != nil {
			continue // detached meanwhile
		}
		if strings.TrimSuffix(string(data), "\n") == want {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(e))))
		}
	}
	sort.Strings(devs)
	return devs, nil
}

func (b *LoopBackend) loopDevicesLosetup(ctx context.Context, file string) ([]string, error) {
	out, err := b.run(ctx, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", file)
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			devs = append(devs, l)
		}
	}
	sort.Strings(devs)
	return devs, nil
}

// run runs a command with runCommand.
func (b *LoopBackend) run(ctx context.Context, name string, args ...string) (string, error) {
	return runCommand(ctx, b.exec, name, args...)
}
