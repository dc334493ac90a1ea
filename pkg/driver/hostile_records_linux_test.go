package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	mount "k8s.io/mount-utils"
)

// TestLoopForeignRecordNeverReplaced: a <id>.json the driver did not write
// (unparseable, another driver's, another volume's, a symlink, a directory,
// a FIFO) makes CreateVolume fail with AlreadyExists naming it; it is never
// overwritten or removed, and listing and capacity skip it.
func TestLoopForeignRecordNeverReplaced(t *testing.T) {
	d, b, loopDir := newLoopDriver(t)
	ctx := context.Background()
	own := filepath.Join(t.TempDir(), "own.json")
	if err := os.WriteFile(own, []byte(`{"id":"x","createdBy":"untorn.csi.dev","sizeBytes":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(id, p string) error{
		"garbage": func(_, p string) error { return os.WriteFile(p, []byte("not json\x00"), 0o600) },
		"other driver": func(id, p string) error {
			return os.WriteFile(p, []byte(`{"id":"`+id+`","sizeBytes":1048576,"createdBy":"other.csi.dev"}`), 0o600)
		},
		"other volume": func(_, p string) error {
			return os.WriteFile(p, []byte(`{"id":"uv-00000000000000000000000000000000","sizeBytes":1048576,"createdBy":"untorn.csi.dev"}`), 0o600)
		},
		"symlink":   func(_, p string) error { return os.Symlink(own, p) },
		"directory": func(_, p string) error { return os.Mkdir(p, 0o700) },
		"fifo":      func(_, p string) error { return syscall.Mkfifo(p, 0o600) },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			vname := "pvc-record-" + name
			id := volumeIDForName(vname)
			rec := filepath.Join(loopDir, id+".json")
			if err := mk(id, rec); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(rec)
			var content []byte // a FIFO is not opened: it would block
			if before.Mode().IsRegular() {
				content, _ = os.ReadFile(rec)
			}
			check := func(when string) {
				t.Helper()
				fi, err := os.Lstat(rec)
				if err != nil || fi.Mode() != before.Mode() || !os.SameFile(fi, before) {
					t.Fatalf("%s: %s replaced or removed: %v %v", when, rec, fi, err)
				}
				if fi.Mode().IsRegular() {
					if got, _ := os.ReadFile(rec); !bytes.Equal(got, content) {
						t.Fatalf("%s: %s rewritten: %q", when, rec, got)
					}
				}
				if _, err := os.Lstat(filepath.Join(loopDir, id+".img")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s: an image was created beside a foreign record: %v", when, err)
				}
			}
			_, err := d.CreateVolume(ctx, createReq(vname, 64<<20, loopClass))
			wantCode(t, "CreateVolume", err, codes.AlreadyExists)
			if !bytes.Contains([]byte(err.Error()), []byte(rec)) {
				t.Errorf("error %q does not name %s", err, rec)
			}
			check("create")
			if err := b.SetMeta(ctx, id, map[string]string{"k": "v"}); !errors.Is(err, ErrVolumeNotFound) {
				t.Errorf("SetMeta on a foreign record: %v, want ErrVolumeNotFound", err)
			}
			check("set meta")
			if l, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{}); err != nil || len(l.GetEntries()) != 0 {
				t.Errorf("ListVolumes %v %v, want no volume", l, err)
			}
			if _, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{}); err != nil {
				t.Errorf("GetCapacity with a foreign record present: %v", err)
			}
			_, err = d.DeleteVolume(ctx, deleteReq(id))
			wantCode(t, "DeleteVolume", err, codes.OK)
			check("delete")
		})
	}
}

// setRecordState rewrites a volume's record as a create interrupted
// before it was marked complete.
func setRecordState(t *testing.T, loopDir, id, state string) {
	t.Helper()
	p := filepath.Join(loopDir, id+".json")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	m["state"] = state
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestLoopResumesOnlyItsOwnInterruptedCreate: a create interrupted after
// its record was written is finished by the next CreateVolume (the image
// it made is kept, a missing one is made); a foreign file that took the
// image's place meanwhile is refused and survives DeleteVolume.
func TestLoopResumesOnlyItsOwnInterruptedCreate(t *testing.T) {
	d, _, loopDir := newLoopDriver(t)
	ctx := context.Background()
	name := "pvc-interrupted"
	resp, err := d.CreateVolume(ctx, createReq(name, 64<<20, loopClass))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	img := filepath.Join(loopDir, id+".img")
	ino := inode(t, img)

	// Killed after the image got its name, before the record was marked.
	setRecordState(t, loopDir, id, loopStateCreating)
	if _, err := d.CreateVolume(ctx, createReq(name, 64<<20, loopClass)); err != nil {
		t.Fatalf("resume with the driver's own image: %v", err)
	}
	if got := inode(t, img); got != ino {
		t.Errorf("the driver's own image was replaced (inode %d, was %d)", got, ino)
	}

	// Killed before the image got its name.
	setRecordState(t, loopDir, id, loopStateCreating)
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateVolume(ctx, createReq(name, 64<<20, loopClass)); err != nil {
		t.Fatalf("resume without an image: %v", err)
	}
	if fi, err := os.Lstat(img); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("image after resume: %v %v", fi, err)
	}

	// Killed before the image got its name, and a foreign file took it.
	setRecordState(t, loopDir, id, loopStateCreating)
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	foreign := []byte("someone else's file\n")
	if err := os.WriteFile(img, foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.CreateVolume(ctx, createReq(name, 64<<20, loopClass))
	wantCode(t, "resume over a foreign image", err, codes.AlreadyExists)
	_, err = d.DeleteVolume(ctx, deleteReq(id))
	wantCode(t, "DeleteVolume", err, codes.OK)
	if got, err := os.ReadFile(img); err != nil || !bytes.Equal(got, foreign) {
		t.Fatalf("foreign image after resume and delete: %q %v", got, err)
	}
	wantNoRecord(t, "DeleteVolume", loopDir, id)
}

// TestLoopRecordWithoutIdentity: records written before image identities
// were kept still work (get, delete); an unfinished one whose image cannot
// be told from a foreign file is refused rather than adopted.
func TestLoopRecordWithoutIdentity(t *testing.T) {
	d, b, loopDir := newLoopDriver(t)
	ctx := context.Background()
	write := func(name, state string) (string, string) {
		id := volumeIDForName(name)
		rec := loopRecord{ID: id, SizeBytes: 64 << 20, Meta: map[string]string{metaName: name}, CreatedBy: loopCreatedBy, State: state}
		data, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(loopDir, id+".json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(loopDir, id+".img")
		if err := os.WriteFile(img, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		return id, img
	}
	id, img := write("pvc-legacy", "")
	if v, err := b.Get(ctx, id); err != nil || v.SizeBytes != 64<<20 {
		t.Fatalf("Get of a record without identity: %+v %v", v, err)
	}
	if _, err := d.DeleteVolume(ctx, deleteReq(id)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image of a record without identity kept: %v", err)
	}

	id, img = write("pvc-legacy-creating", loopStateCreating)
	_, err := d.CreateVolume(ctx, createReq("pvc-legacy-creating", 64<<20, loopClass))
	wantCode(t, "resume without identity", err, codes.AlreadyExists)
	if got, _ := os.ReadFile(img); string(got) != "data" {
		t.Errorf("image changed: %q", got)
	}
}

// TestLoopSizeOverflow: sizes near the int64 limit are OutOfRange (or
// ResourceExhausted where representable but too large) with nothing
// written, for CreateVolume, ControllerExpandVolume, NodeExpandVolume and
// the backend itself; an expansion never reports success for less.
func TestLoopSizeOverflow(t *testing.T) {
	d, b, loopDir := newLoopDriver(t)
	ctx := context.Background()
	for _, tc := range []struct {
		size int64
		want codes.Code
	}{
		{math.MaxInt64, codes.OutOfRange},
		{math.MaxInt64 - 1<<19, codes.OutOfRange},
		{math.MaxInt64 - 1<<20 + 2, codes.OutOfRange},
		{1 << 62, codes.ResourceExhausted},
	} {
		_, err := d.CreateVolume(ctx, createReq("pvc-huge", tc.size, nil))
		wantCode(t, "CreateVolume", err, tc.want)
		if names := dirNames(t, loopDir); len(names) != 0 {
			t.Fatalf("CreateVolume of %d bytes left %q", tc.size, names)
		}
	}
	if _, err := b.Create(ctx, volumeIDForName("pvc-huge"), math.MaxInt64, nil); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("backend Create of MaxInt64 bytes: %v, want ErrOutOfRange", err)
	}

	resp, err := d.CreateVolume(ctx, createReq("pvc-grow", 64<<20, loopClass))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	// NodeExpandVolume acts only on a path the volume is staged at.
	dev, err := b.Attach(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	volPath := t.TempDir()
	if err := d.state.put(stagedVolume{VolumeID: id, StagingPath: volPath, Device: dev, FSType: "ext4"}); err != nil {
		t.Fatal(err)
	}
	fm := d.mounter.(*mount.SafeFormatAndMount).Interface.(*mount.FakeMounter)
	fm.MountPoints = append(fm.MountPoints, mount.MountPoint{Device: dev, Path: volPath, Type: "ext4"})
	t.Cleanup(func() { d.state.remove(id) })
	for _, tc := range []struct {
		size int64
		want codes.Code
	}{
		{math.MaxInt64, codes.OutOfRange},
		{math.MaxInt64 - 1<<19, codes.OutOfRange},
		{1 << 62, codes.ResourceExhausted},
	} {
		cr := &csi.CapacityRange{RequiredBytes: tc.size}
		_, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: cr})
		wantCode(t, "ControllerExpandVolume", err, tc.want)
		_, err = d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: volPath, CapacityRange: cr})
		wantCode(t, "NodeExpandVolume", err, tc.want)
		if v, err := b.Get(ctx, id); err != nil || v.SizeBytes != 64<<20 {
			t.Fatalf("volume after a failed expansion to %d: %+v %v", tc.size, v, err)
		}
		if fi, err := os.Stat(filepath.Join(loopDir, id+".img")); err != nil || fi.Size() != 64<<20 {
			t.Fatalf("image after a failed expansion to %d: %v %v", tc.size, fi, err)
		}
	}
	if _, err := b.Expand(ctx, id, math.MaxInt64); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("backend Expand to MaxInt64: %v, want ErrOutOfRange", err)
	}
}
