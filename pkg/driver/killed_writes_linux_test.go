package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/utils/exec"
)

// TestLoopDeleteRemovesTempsOfKilledRecordWrites: a kill between the
// creation of a temporary record file and its rename leaves
// <id>.json.tmp-* in the loop directory. Delete removes those that are
// the backend's own (empty, or holding its record of the volume), also
// when the record itself is already gone, and leaves everything else.
func TestLoopDeleteRemovesTempsOfKilledRecordWrites(t *testing.T) {
	ctx := context.Background()
	dir, outside := t.TempDir(), t.TempDir()
	b := NewLoopBackend(dir, 0, exec.New())
	fakeLoopSysfs(t, b, outside)
	id, other := volumeIDForName("killed"), volumeIDForName("other")
	if _, err := b.Create(ctx, id, 1<<20, map[string]string{metaName: "killed"}); err != nil {
		t.Fatal(err)
	}
	record, err := os.ReadFile(filepath.Join(dir, id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write(id+".json.tmp-111", nil)
	full := write(id+".json.tmp-222", record)
	foreign := write(id+".json.tmp-333", []byte("someone's data"))
	otherVol := write(other+".json.tmp-444", nil)
	target := filepath.Join(outside, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, id+".json.tmp-555")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}

	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, full, filepath.Join(dir, id+".json"), filepath.Join(dir, id+".img")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after Delete (%v)", filepath.Base(p), err)
		}
	}
	for _, p := range []string{foreign, otherVol, link, target} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s, not the backend's, was removed: %v", filepath.Base(p), err)
		}
	}

	// Killed after the record was removed: a retried Delete finds no
	// record and still removes the backend's temporary files.
	late := write(id+".json.tmp-666", nil)
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(late); !os.IsNotExist(err) {
		t.Errorf("%s left by a Delete without a record (%v)", filepath.Base(late), err)
	}
}

// TestStateRemoveDropsTempsOfKilledWrites: a kill inside stateStore.put
// leaves <id>.json.*.tmp in the node state; unstaging (remove) drops the
// empty ones and those holding the volume's record, and nothing else.
func TestStateRemoveDropsTempsOfKilledWrites(t *testing.T) {
	s := &stateStore{dir: t.TempDir()}
	id, other := volumeIDForName("killed"), volumeIDForName("other")
	if err := s.put(stagedVolume{VolumeID: id, StagingPath: "/staging"}); err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		id + ".json.111.tmp":    nil,
		id + ".json.222.tmp":    rec,
		id + ".json.333.tmp":    []byte("not a record"),
		other + ".json.444.tmp": nil,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.remove(id); err != nil {
		t.Fatal(err)
	}
	left, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	want := []string{id + ".json.333.tmp", other + ".json.444.tmp"}
	if len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("left in the state dir: %v, want %v", names, want)
	}
}

// fakeLoopSysfs gives b a sysfs with one loop device backed by a file in
// outside: no loop device holds a volume's image, no losetup is needed.
func fakeLoopSysfs(t *testing.T, b *LoopBackend, outside string) {
	t.Helper()
	b.sysfs = t.TempDir()
	bf := filepath.Join(b.sysfs, "block", "loop0", "loop", "backing_file")
	if err := os.MkdirAll(filepath.Dir(bf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bf, []byte(filepath.Join(outside, "other.img")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoopRemovesTempImagesOfKilledCreates: where the loop directory's
// filesystem has no O_TMPFILE, a new image first gets a temporary name
// <id>.img.tmp-*, and the record (state creating) holds its identity
// before the image is named. A kill in between leaves that file; the
// resumed Create and Delete remove it, and nothing with another identity.
func TestLoopRemovesTempImagesOfKilledCreates(t *testing.T) {
	ctx := context.Background()
	dir, outside := t.TempDir(), t.TempDir()
	b := NewLoopBackend(dir, 0, exec.New())
	fakeLoopSysfs(t, b, outside)
	foreignData := []byte("not the backend's")
	killedCreate := func(name string) (id, tmp, foreign string) {
		t.Helper()
		id = volumeIDForName(name)
		tmp = filepath.Join(dir, id+".img.tmp-123")
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		ident, err := identityOf(f)
		if err != nil {
			t.Fatal(err)
		}
		r := loopRecord{ID: id, SizeBytes: 1 << 20, Meta: map[string]string{metaName: name},
			CreatedBy: loopCreatedBy, State: loopStateCreating, Image: &ident}
		if err := b.createRecord(r); err != nil {
			t.Fatal(err)
		}
		foreign = filepath.Join(dir, id+".img.tmp-999")
		if err := os.WriteFile(foreign, foreignData, 0o600); err != nil {
			t.Fatal(err)
		}
		return id, tmp, foreign
	}
	check := func(what, tmp, foreign string) {
		t.Helper()
		if _, err := os.Lstat(tmp); !os.IsNotExist(err) {
			t.Errorf("%s: temporary image %s left (%v)", what, filepath.Base(tmp), err)
		}
		if got, err := os.ReadFile(foreign); err != nil || string(got) != string(foreignData) {
			t.Errorf("%s: %s, not the backend's, changed: %q %v", what, filepath.Base(foreign), got, err)
		}
	}

	id, tmp, foreign := killedCreate("resumed")
	vol, err := b.Create(ctx, id, 1<<20, map[string]string{metaName: "resumed"})
	if err != nil || vol.SizeBytes != 1<<20 {
		t.Fatalf("resumed create: %+v %v", vol, err)
	}
	check("resumed create", tmp, foreign)
	if _, err := os.Stat(filepath.Join(dir, id+".img")); err != nil {
		t.Errorf("resumed create made no image: %v", err)
	}

	id, tmp, foreign = killedCreate("deleted")
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	check("delete", tmp, foreign)
	if _, err := os.Lstat(filepath.Join(dir, id+".json")); !os.IsNotExist(err) {
		t.Errorf("record left after delete (%v)", err)
	}
}
