package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/untorn/untorn/internal/testutil"
)

// Files and paths the driver did not create, on the real loop backend in a
// temporary --loop-dir: the driver refuses to take them, and never
// truncates, replaces or removes them.

// newLoopDriver is a driver (mode all) on a real loop backend; mounts are
// faked, nothing else is.
func newLoopDriver(t *testing.T) (*Driver, *LoopBackend, string) {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	loopDir := filepath.Join(dir, "loop")
	if err := os.Mkdir(loopDir, 0o700); err != nil {
		t.Fatal(err)
	}
	b := NewLoopBackend(loopDir, 0, exec.New())
	fexec := &testingexec.FakeExec{}
	d, err := New(Options{Mode: ModeAll, Endpoint: "unix://" + dir + "/csi.sock", NodeID: "node-1", Backend: "loop",
		LoopDir: loopDir, SysfsRoot: "/sys", StateDir: dir + "/state", ShimDir: dir + "/shim"},
		Deps{Backend: b, Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fexec), Exec: fexec, Atomic: &fakeAtomic{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ids, _ := filepath.Glob(filepath.Join(loopDir, "*.json"))
		for _, p := range ids {
			b.Delete(context.Background(), strings.TrimSuffix(filepath.Base(p), ".json"))
		}
	})
	return d, b, loopDir
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// wantNoRecord fails t when loopDir still holds a record of volume id after
// what.
func wantNoRecord(t *testing.T, what, loopDir, id string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(loopDir, id+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left the volume's record: %v", what, err)
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v, want %v (%v)", what, got, want, err)
	}
}

// loopClass is a class the loop backend serves (loop devices have no
// hardware atomic writes, so ext4 under atomicPolicy require is refused
// before anything is carved).
var loopClass = map[string]string{ParamAtomicPolicy: "prefer"}

func deleteReq(id string) *csi.DeleteVolumeRequest { return &csi.DeleteVolumeRequest{VolumeId: id} }

// TestLoopForeignImageSurvivesCreateAndDelete: an ext4 image holding data
// at <id>.img is neither adopted nor truncated by CreateVolume, nor removed
// by DeleteVolume: its checksum is the same after both.
func TestLoopForeignImageSurvivesCreateAndDelete(t *testing.T) {
	d, _, loopDir := newLoopDriver(t)
	ctx := context.Background()
	name := "pvc-foreign-ext4"
	id := volumeIDForName(name)
	img := filepath.Join(loopDir, id+".img")

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "table.dat"), []byte(strings.Repeat("rows of a database\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	testutil.Run(t, "mkfs.ext4", "-q", "-F", "-d", src, img)
	sum := fileSum(t, img)

	_, err = d.CreateVolume(ctx, createReq(name, 256<<20, loopClass))
	wantCode(t, "CreateVolume over a foreign image", err, codes.AlreadyExists)
	if !strings.Contains(err.Error(), img) {
		t.Errorf("error %q does not name %s", err, img)
	}
	if names := dirNames(t, loopDir); len(names) != 1 || names[0] != id+".img" {
		t.Errorf("loop dir holds %q after a refused create, want only the foreign image", names)
	}
	_, err = d.DeleteVolume(ctx, deleteReq(id))
	wantCode(t, "DeleteVolume", err, codes.OK)
	if fi, err := os.Stat(img); err != nil || fi.Size() != 512<<20 {
		t.Fatalf("foreign image after create+delete: %v %v, want 512 MiB", fi, err)
	}
	if got := fileSum(t, img); got != sum {
		t.Errorf("foreign image changed: sha256 %s, was %s", got, sum)
	}
	if l, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{}); err != nil || len(l.GetEntries()) != 0 {
		t.Errorf("ListVolumes %v %v, want no volumes", l, err)
	}
}

// TestLoopSymlinkImageNeverFollowed: a symlink at <id>.img to a file outside
// --loop-dir is refused by CreateVolume; and when a created volume's image
// is replaced by such a symlink, expand, attach, list and delete do not
// follow it.
func TestLoopSymlinkImageNeverFollowed(t *testing.T) {
	d, b, loopDir := newLoopDriver(t)
	ctx := context.Background()
	victim := filepath.Join(t.TempDir(), "victim")
	content := []byte("precious data outside the loop dir\n")
	if err := os.WriteFile(victim, content, 0o600); err != nil {
		t.Fatal(err)
	}
	checkVictim := func(when string) {
		t.Helper()
		if got, err := os.ReadFile(victim); err != nil || string(got) != string(content) {
			t.Fatalf("%s: the file outside the loop dir changed: %q %v", when, got, err)
		}
		if out := testutil.Run(t, "losetup", "--list", "--noheadings", "--associated", victim); strings.TrimSpace(out) != "" {
			t.Fatalf("%s: a loop device holds the file outside the loop dir: %s", when, out)
		}
	}

	id := volumeIDForName("pvc-symlink")
	if err := os.Symlink(victim, filepath.Join(loopDir, id+".img")); err != nil {
		t.Fatal(err)
	}
	_, err := d.CreateVolume(ctx, createReq("pvc-symlink", 64<<20, loopClass))
	wantCode(t, "CreateVolume over a symlink", err, codes.AlreadyExists)
	checkVictim("create")
	wantNoRecord(t, "a refused create", loopDir, id)
	_, err = d.DeleteVolume(ctx, deleteReq(id))
	wantCode(t, "DeleteVolume", err, codes.OK)
	checkVictim("delete")

	// A volume of the driver whose image is swapped for a symlink.
	resp, err := d.CreateVolume(ctx, createReq("pvc-swapped", 64<<20, loopClass))
	if err != nil {
		t.Fatal(err)
	}
	sid := resp.GetVolume().GetVolumeId()
	img := filepath.Join(loopDir, sid+".img")
	if err := os.Rename(img, filepath.Join(t.TempDir(), "moved.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, img); err != nil {
		t.Fatal(err)
	}
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: sid,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20}})
	wantCode(t, "ControllerExpandVolume through a symlink", err, codes.NotFound)
	if _, err := b.Expand(ctx, sid, 128<<20); err == nil {
		t.Error("backend Expand through a symlink succeeded")
	}
	if dev, err := b.Attach(ctx, sid); err == nil {
		t.Errorf("Attach through a symlink gave %s", dev)
	}
	checkVictim("expand and attach")
	if l, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{}); err != nil || len(l.GetEntries()) != 0 {
		t.Errorf("ListVolumes %v %v, want no volume with a foreign image", l, err)
	}
	_, err = d.DeleteVolume(ctx, deleteReq(sid))
	wantCode(t, "DeleteVolume", err, codes.OK)
	checkVictim("delete")
	if fi, err := os.Lstat(img); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink at the image path was removed or changed: %v %v", fi, err)
	}
	wantNoRecord(t, "DeleteVolume", loopDir, sid)
}

// TestLoopDeleteKeepsImageOfBusyLoopDevice: when a loop device of the
// volume is held open elsewhere, losetup --detach only marks it for a lazy
// detach. DeleteVolume then fails (FailedPrecondition) and keeps the image
// and record; once the device is released it deletes both.
func TestLoopDeleteKeepsImageOfBusyLoopDevice(t *testing.T) {
	d, b, loopDir := newLoopDriver(t)
	ctx := context.Background()
	resp, err := d.CreateVolume(ctx, createReq("pvc-busy", 64<<20, loopClass))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	dev, err := b.Attach(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	_, err = d.DeleteVolume(ctx, deleteReq(id))
	wantCode(t, "DeleteVolume while the loop device is open", err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), dev) {
		t.Errorf("error %q does not name %s", err, dev)
	}
	for _, p := range []string{id + ".img", id + ".json"} {
		if _, err := os.Lstat(filepath.Join(loopDir, p)); err != nil {
			t.Errorf("%s removed while its loop device is attached: %v", p, err)
		}
	}
	holder.Close()
	_, err = d.DeleteVolume(ctx, deleteReq(id))
	wantCode(t, "DeleteVolume after release", err, codes.OK)
	if names := dirNames(t, loopDir); len(names) != 0 {
		t.Errorf("loop dir holds %q after delete", names)
	}
	if _, err := os.Stat("/sys/block/" + filepath.Base(dev) + "/loop/backing_file"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still attached after delete: %v", dev, err)
	}
}

// TestLoopDirectoryAndDeviceAtImagePath: a directory or a FIFO at
// <id>.img is refused cleanly, with nothing written.
func TestLoopDirectoryAndDeviceAtImagePath(t *testing.T) {
	d, _, loopDir := newLoopDriver(t)
	ctx := context.Background()
	for name, mk := range map[string]func(string) error{
		"pvc-dir":  func(p string) error { return os.Mkdir(p, 0o700) },
		"pvc-fifo": func(p string) error { return syscall.Mkfifo(p, 0o600) },
	} {
		id := volumeIDForName(name)
		img := filepath.Join(loopDir, id+".img")
		if err := mk(img); err != nil {
			t.Fatal(err)
		}
		_, err := d.CreateVolume(ctx, createReq(name, 64<<20, loopClass))
		wantCode(t, name, err, codes.AlreadyExists)
		if !strings.Contains(err.Error(), img) {
			t.Errorf("%s: error %q does not name %s", name, err, img)
		}
		wantNoRecord(t, name+": a refused create", loopDir, id)
		_, err = d.DeleteVolume(ctx, deleteReq(id))
		wantCode(t, name+": DeleteVolume", err, codes.OK)
		if _, err := os.Lstat(img); err != nil {
			t.Errorf("%s: removed by DeleteVolume: %v", name, err)
		}
	}
}
