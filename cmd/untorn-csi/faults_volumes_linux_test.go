package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/untorn/untorn/internal/testutil"
)

// The volumes of the fault-injection test and the steps it kills.

// faultVolume is a volume of the run and what it must still hold.
type faultVolume struct {
	name, id, img   string
	params          map[string]string
	size            int64
	staging, target string
	staged          bool
	published       bool
	broken          bool // stayed unstageable; left out of later steps
	// uuid is the filesystem's UUID when the first file was written;
	// empty while the volume holds no data.
	uuid  string
	files []faultFile
}

// faultFile is a file written and fsynced before a kill.
type faultFile struct {
	name string
	size int64
	sum  [sha256.Size]byte
}

var faultCapability = &csi.VolumeCapability{
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
}

// newVolume names a new volume: the smallest sizes the filesystems allow
// keep mkfs short (XFS: 300 MiB).
func (f *faultRun) newVolume(params map[string]string) *faultVolume {
	f.serial++
	name := fmt.Sprintf("fault-%d", f.serial)
	size := int64(300 << 20)
	if params["fsType"] == "ext4" {
		size = 64 << 20
	}
	return &faultVolume{name: name, params: params, size: size,
		staging: filepath.Join(f.dir, "staging", name), target: filepath.Join(f.dir, "pods", name, "mount")}
}

// pick returns a random staged volume (of fsType, when not empty), nil
// when there is none.
func (f *faultRun) pick(fsType string) *faultVolume {
	var staged []*faultVolume
	for _, v := range f.vols {
		if v.staged && !v.broken && (fsType == "" || v.params["fsType"] == fsType) {
			staged = append(staged, v)
		}
	}
	if len(staged) == 0 {
		return nil // every one stayed unstageable: counted already
	}
	return staged[f.rng.IntN(len(staged))]
}

func (f *faultRun) create(v *faultVolume) {
	f.t.Helper()
	call := func(ctx context.Context, conn *grpc.ClientConn) error {
		r, err := csi.NewControllerClient(conn).CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name: v.name, Parameters: v.params, CapacityRange: &csi.CapacityRange{RequiredBytes: v.size},
			VolumeCapabilities: []*csi.VolumeCapability{faultCapability},
		})
		if err != nil {
			return err
		}
		if r.GetVolume().GetCapacityBytes() < v.size {
			return fmt.Errorf("volume %s has %d bytes, %d requested", v.name, r.GetVolume().GetCapacityBytes(), v.size)
		}
		v.id = r.GetVolume().GetVolumeId()
		return nil
	}
	f.callWithKill("CreateVolume", f.timed("CreateVolume"), call)
	if !f.mustRetry("CreateVolume", call) {
		f.t.FailNow()
	}
	v.img = filepath.Join(f.loopDir, v.id+".img")
	f.images = append(f.images, v.img)
	f.vols = append(f.vols, v)
}

func (f *faultRun) stageCall(v *faultVolume) rpcCall {
	return func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewNodeClient(conn).NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
			VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: faultCapability})
		return err
	}
}

// stage stages a new volume and kills the plugin while mkfs runs.
func (f *faultRun) stage(v *faultVolume) {
	f.t.Helper()
	f.callWithKill("NodeStageVolume (blank)", f.duringMkfs(), f.stageCall(v))
	f.finishStage(v, "NodeStageVolume (blank)")
}

// restage writes a file, unstages the volume and stages it again with a
// kill at a random point.
func (f *faultRun) restage(v *faultVolume) {
	f.t.Helper()
	f.writeFile(v)
	f.unstage(v)
	f.callWithKill("NodeStageVolume (formatted)", f.timed("NodeStageVolume (formatted)"), f.stageCall(v))
	f.finishStage(v, "NodeStageVolume (formatted)")
}

// finishStage repeats staging after a kill, publishes the volume and
// checks its data (or writes the first files of a new volume).
func (f *faultRun) finishStage(v *faultVolume, name string) {
	f.t.Helper()
	if err := f.retry(name, f.stageCall(v)); err != nil {
		f.unstageable++
		v.broken = true
		f.t.Errorf("volume %s (%s) stays unstageable: %v", v.name, v.id, err)
		return
	}
	v.staged = true
	if !f.mustRetry("NodePublishVolume", func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewNodeClient(conn).NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: faultCapability})
		return err
	}) {
		return
	}
	v.published = true
	if v.uuid == "" {
		f.writeFile(v)
		f.writeFile(v)
		return
	}
	f.checkData(v, "after "+name)
}

// expand writes a file and grows the volume by 32 MiB through
// NodeExpandVolume alone (so the node grows the image, the loop device
// and the filesystem), with a kill at a random point.
func (f *faultRun) expand(v *faultVolume) {
	f.t.Helper()
	f.writeFile(v)
	before := fsBytes(f.t, v.staging)
	want := v.size + 32<<20
	call := func(ctx context.Context, conn *grpc.ClientConn) error {
		r, err := csi.NewNodeClient(conn).NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
			VolumeId: v.id, VolumePath: v.target, StagingTargetPath: v.staging, VolumeCapability: faultCapability,
			CapacityRange: &csi.CapacityRange{RequiredBytes: want}})
		if err == nil && r.GetCapacityBytes() < want {
			err = fmt.Errorf("expanded to %d bytes, %d requested", r.GetCapacityBytes(), want)
		}
		return err
	}
	f.callWithKill("NodeExpandVolume", f.timed("NodeExpandVolume"), call)
	if !f.mustRetry("NodeExpandVolume", call) {
		return
	}
	v.size = want
	if after := fsBytes(f.t, v.staging); after <= before {
		f.t.Errorf("volume %s: filesystem of %d bytes after expansion, %d before", v.name, after, before)
	}
	f.checkData(v, "after NodeExpandVolume")
}

// delete checks the volume's data, unstages it and deletes it with a kill
// at a random point; the image, its record and its loop devices must go.
func (f *faultRun) delete(v *faultVolume) {
	f.t.Helper()
	f.checkData(v, "before delete")
	f.unstage(v)
	f.callWithKill("DeleteVolume", f.timed("DeleteVolume"), f.deleteCall(v))
	f.finishDelete(v)
}

func (f *faultRun) deleteNoKill(v *faultVolume) { f.finishDelete(v) }

func (f *faultRun) deleteCall(v *faultVolume) rpcCall {
	return func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewControllerClient(conn).DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
		return err
	}
}

func (f *faultRun) finishDelete(v *faultVolume) {
	f.t.Helper()
	if !f.mustRetry("DeleteVolume", f.deleteCall(v)) {
		for _, dev := range loopDevicesUnder(resolvePath(f.loopDir)) {
			f.t.Logf("%s: held by %v", dev, deviceHolders(dev))
		}
		return
	}
	for _, p := range []string{v.img, strings.TrimSuffix(v.img, ".img") + ".json"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			f.t.Errorf("volume %s deleted but %s is still there (%v)", v.name, p, err)
		}
	}
	f.vols = slices.DeleteFunc(f.vols, func(x *faultVolume) bool { return x == v })
}

// unstage unpublishes and unstages v (no kill) and then, as kubelet does,
// removes the target and staging directories. Removing them also detaches
// the copies of their mounts that mount namespaces created meanwhile by
// other processes (unshare) hold, which would keep the loop device busy.
func (f *faultRun) unstage(v *faultVolume) {
	f.t.Helper()
	if v.published && f.mustRetry("NodeUnpublishVolume", func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := csi.NewNodeClient(conn).NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
		return err
	}) {
		v.published = false
		removeDir(f.t, v.target)
	}
	if v.staged || v.broken {
		if f.mustRetry("NodeUnstageVolume", func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := csi.NewNodeClient(conn).NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
			return err
		}) {
			v.staged = false
			removeDir(f.t, v.staging)
		}
	}
}

// removeDir removes an empty directory (a mount point no longer).
func removeDir(t interface{ Errorf(string, ...any) }, p string) {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove %s after unmounting it: %v", p, err)
	}
}

// writeFile writes a file of random content into the mounted volume and
// makes it durable (file and directory fsynced) before anything else
// happens; the first file also records the filesystem's UUID.
func (f *faultRun) writeFile(v *faultVolume) {
	f.t.Helper()
	dir := v.mounted()
	if dir == "" {
		f.t.Fatalf("volume %s is not mounted", v.name)
	}
	data := make([]byte, 4096*(1+f.rng.IntN(128)))
	for i := range data {
		data[i] = byte(f.rng.Uint32())
	}
	name := fmt.Sprintf("file-%03d", len(v.files))
	fd, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	_, err = fd.Write(data)
	if err == nil {
		err = fd.Sync()
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncPath(dir)
	}
	if err != nil {
		f.t.Fatalf("write %s on volume %s: %v", name, v.name, err)
	}
	v.files = append(v.files, faultFile{name: name, size: int64(len(data)), sum: sha256.Sum256(data)})
	if v.uuid == "" {
		v.uuid = fsUUID(f.t, f.device(v))
	}
}

// mounted is where the volume's files are reachable ("" when nowhere).
func (v *faultVolume) mounted() string {
	switch {
	case v.published:
		return v.target
	case v.staged:
		return v.staging
	}
	return ""
}

// checkAll checks every mounted volume that holds data.
func (f *faultRun) checkAll(phase string) {
	f.t.Helper()
	for _, v := range f.vols {
		f.checkData(v, phase)
	}
}

// checkData reads back every file of v and compares the filesystem's UUID
// with the one its data was written to: a different UUID or missing
// files mean the volume was formatted again.
func (f *faultRun) checkData(v *faultVolume, phase string) {
	f.t.Helper()
	dir := v.mounted()
	if dir == "" || v.uuid == "" {
		return
	}
	lost, missing := int64(0), 0
	for _, file := range v.files {
		got, err := os.ReadFile(filepath.Join(dir, file.name))
		if errors.Is(err, os.ErrNotExist) {
			missing++
		}
		if err != nil || int64(len(got)) != file.size || sha256.Sum256(got) != file.sum {
			f.t.Errorf("%s: volume %s: file %s (%d bytes) does not read back: %d bytes, %v", phase, v.name, file.name, file.size, len(got), err)
			lost += file.size
		}
	}
	f.bytesLost += lost
	// A new filesystem has a new UUID; one that lost every file was made
	// again too, whatever its UUID says.
	if u := fsUUID(f.t, f.device(v)); u != v.uuid || (missing > 0 && missing == len(v.files)) {
		f.t.Errorf("%s: volume %s holds filesystem %s with %d of %d files; its data was written to filesystem %s",
			phase, v.name, u, len(v.files)-missing, len(v.files), v.uuid)
		f.reformatted[v.name] = true
	}
}

// device is the loop device of v's image.
func (f *faultRun) device(v *faultVolume) string {
	f.t.Helper()
	out := strings.TrimSpace(testutil.Run(f.t, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", v.img))
	dev, _, _ := strings.Cut(out, "\n")
	if dev == "" {
		f.t.Fatalf("volume %s: no loop device on %s", v.name, v.img)
	}
	return dev
}

func fsBytes(t interface{ Fatal(...any) }, p string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func syncPath(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
