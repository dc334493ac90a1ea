package driver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/untorn/untorn/internal/testutil"
	untorn "github.com/untorn/untorn/pkg/atomic"
)

// loopDriver is the real driver on the loop backend in a temporary
// directory; whatever it attached or mounted there is released at cleanup.
func loopDriver(t *testing.T) (*Driver, string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{"loop", "state", "shim"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runner := exec.New()
	opts := Options{Mode: ModeAll, Endpoint: "unix://" + dir + "/csi.sock", NodeID: "n1", Backend: "loop",
		LoopDir: dir + "/loop", SysfsRoot: "/sys", StateDir: dir + "/state", ShimDir: dir + "/shim"}
	d, err := New(opts, Deps{Backend: NewLoopBackend(opts.LoopDir, 0, runner), Mounter: mount.NewSafeFormatAndMount(mount.New(""), runner),
		Exec: runner, Atomic: SysfsAtomic{Sysfs: untorn.Sysfs{Root: "/sys"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mps, _ := mount.New("").List()
		for i := len(mps) - 1; i >= 0; i-- {
			if strings.HasPrefix(mps[i].Path, dir+"/") {
				testutil.Output("umount", "-l", mps[i].Path)
			}
		}
		imgs, _ := filepath.Glob(filepath.Join(dir, "loop", "*.img"))
		for _, img := range imgs {
			out, _ := testutil.Output("losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img)
			for _, dev := range strings.Fields(out) {
				testutil.Output("losetup", "-d", dev)
			}
		}
	})
	return d, dir
}

func xfsVolume(t *testing.T, d *Driver, name string) (id, dev string) {
	t.Helper()
	ctx := context.Background()
	r, err := d.CreateVolume(ctx, createReq(name, 512<<20, map[string]string{"fsType": "xfs", "atomicPolicy": "require", "atomicWriteUnit": "16Ki"}))
	if err != nil {
		t.Fatal(err)
	}
	id = r.GetVolume().GetVolumeId()
	if dev, err = d.backend.Attach(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id, dev
}

func stageAt(d *Driver, id, p string) error {
	_, err := d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: p, VolumeCapability: mountCap(snw, "")})
	return err
}

func unstageAt(t *testing.T, d *Driver, id, p string) {
	t.Helper()
	if _, err := d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: p}); err != nil {
		t.Fatal(err)
	}
}

func formatState(t *testing.T, d *Driver, id string) string {
	t.Helper()
	vol, err := d.backend.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return vol.Meta[metaFormatState]
}

func setFormatState(t *testing.T, d *Driver, id, state string) {
	t.Helper()
	if err := d.backend.SetMeta(context.Background(), id, map[string]string{metaFormatState: state}); err != nil {
		t.Fatal(err)
	}
}

// imageSum hashes a loop volume's whole image (what its device holds), to
// prove nothing wrote to it.
func imageSum(t *testing.T, dir, id string) [32]byte {
	t.Helper()
	testutil.Run(t, "sync") // what the device's page cache holds reaches the image
	f, err := os.Open(filepath.Join(dir, "loop", id+".img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// markInProgress leaves the XFS superblock as a SIGKILL during mkfs.xfs
// does: blkid still says xfs, mount says "Structure needs cleaning".
func markInProgress(t *testing.T, dev string, v int) {
	t.Helper()
	testutil.Run(t, "xfs_db", "-x", "-c", "sb 0", "-c", "write inprogress "+string(rune('0'+v)), dev)
}

// TestStageFinishesInterruptedFormat: a volume the driver created blank
// whose mkfs was killed (superblock left in progress) is wiped and
// formatted by the next staging; a volume whose formatting finished is
// never formatted again, even when its superblock looks the same, and its
// data survives.
func TestStageFinishesInterruptedFormat(t *testing.T) {
	d, dir := loopDriver(t)
	id, dev := xfsVolume(t, d, "interrupted")
	if got := formatState(t, d, id); got != formatBlank {
		t.Fatalf("new volume's format state %q, want %q", got, formatBlank)
	}
	// mkfs killed mid-way: a real superblock, marked in progress.
	testutil.Run(t, "mkfs.xfs", "-q", "-f", dev)
	markInProgress(t, dev, 1)
	if out, err := testutil.Output("blkid", "-p", "-s", "TYPE", "-o", "value", dev); err != nil || strings.TrimSpace(out) != "xfs" {
		t.Fatalf("blkid on the interrupted format: %q %v", out, err)
	}
	staging := filepath.Join(dir, "pods", "staging")
	if err := stageAt(d, id, staging); err != nil {
		t.Fatalf("staging a volume whose format was interrupted: %v", err)
	}
	if got := formatState(t, d, id); got != formatFormatted {
		t.Fatalf("format state %q after staging, want %q", got, formatFormatted)
	}
	data := bytes.Repeat([]byte("page"), 2048)
	if err := os.WriteFile(filepath.Join(staging, "data"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	unstageAt(t, d, id, staging)
	testutil.Run(t, "sync")

	// The same superblock damage on a formatted volume: refused, untouched.
	markInProgress(t, dev, 1)
	sum := imageSum(t, dir, id)
	err := stageAt(d, id, staging)
	if err == nil {
		t.Fatal("staged a formatted volume whose superblock is marked in progress")
	}
	t.Logf("refusal: %v", status.Convert(err).Message())
	if imageSum(t, dir, id) != sum {
		t.Fatal("the formatted volume's device changed")
	}
	if formatState(t, d, id) != formatFormatted {
		t.Fatal("format state changed")
	}
	// Repaired by hand, it stages with its data.
	markInProgress(t, dev, 0)
	if err := stageAt(d, id, staging); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(staging, "data")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after staging again: %d bytes, %v", len(got), err)
	}
	unstageAt(t, d, id, staging)
}

// TestStageRefusesForeignContent: a volume holding a filesystem of another
// type (even after it was formatted by the driver) or data without a
// signature (a volume from before format states) is refused with what was
// found, and not one byte of the device changes (no fsck, no mkfs).
func TestStageRefusesForeignContent(t *testing.T) {
	d, dir := loopDriver(t)
	staging := filepath.Join(dir, "pods", "staging")

	t.Run("foreign ext4 on a formatted volume", func(t *testing.T) {
		id, dev := xfsVolume(t, d, "foreign-ext4")
		setFormatState(t, d, id, formatFormatted)
		testutil.Run(t, "mkfs.ext4", "-q", "-F", "-L", "x", dev)
		sum := imageSum(t, dir, id)
		err := stageAt(d, id, staging)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "ext4 filesystem (label x)") {
			t.Errorf("refusal does not say what was found: %s", msg)
		}
		if imageSum(t, dir, id) != sum {
			t.Error("the device changed (fsck or mkfs ran)")
		}
	})
	t.Run("data without a signature, no format state", func(t *testing.T) {
		id, dev := xfsVolume(t, d, "legacy-data")
		setFormatState(t, d, id, "")
		f, err := os.OpenFile(dev, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 64<<10), 4096); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sum := imageSum(t, dir, id)
		err = stageAt(d, id, staging)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
		}
		t.Logf("refusal: %v", status.Convert(err).Message())
		if imageSum(t, dir, id) != sum {
			t.Error("the device changed")
		}
	})
	t.Run("truly blank, no format state", func(t *testing.T) {
		id, _ := xfsVolume(t, d, "legacy-blank")
		setFormatState(t, d, id, "")
		if err := stageAt(d, id, staging); err != nil {
			t.Fatalf("a truly blank volume from an earlier version: %v", err)
		}
		if got := formatState(t, d, id); got != formatFormatted {
			t.Errorf("format state %q, want %q", got, formatFormatted)
		}
		unstageAt(t, d, id, staging)
	})
}
