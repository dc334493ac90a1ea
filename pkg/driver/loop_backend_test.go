package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/utils/exec"

	"github.com/untorn/untorn/internal/testutil"
)

// TestLoopBackend drives the loop backend against real losetup: create,
// attach with direct I/O, re-attach finds the same device, expand grows the
// device online, capacity accounts for sparse images, delete detaches and
// removes only what the backend made.
func TestLoopBackend(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	b := NewLoopBackend(dir, 1<<30, exec.New())
	if err := b.Check(ctx); err != nil {
		t.Fatal(err)
	}
	id := volumeIDForName("loop-test")
	capBefore, err := b.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vol, err := b.Create(ctx, id, 64<<20, map[string]string{"name": "loop-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Delete(ctx, id) })
	capAfter, _ := b.Capacity(ctx)
	if capBefore-capAfter < 60<<20 {
		t.Errorf("capacity went from %d to %d after a 64 MiB volume", capBefore, capAfter)
	}
	if again, err := b.Create(ctx, id, 64<<20, nil); err != nil || again.Meta["name"] != "loop-test" {
		t.Fatalf("re-create: %v %v", again, err)
	}
	if _, err := b.Create(ctx, volumeIDForName("huge"), capAfter+(1<<30), nil); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("oversized create: %v", err)
	}

	dev, err := b.Attach(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if dio := strings.TrimSpace(testutil.Run(t, "losetup", "--list", "--noheadings", "--output", "DIO", dev)); dio != "1" {
		t.Errorf("direct I/O %q on %s", dio, dev)
	}
	if dev2, err := b.Attach(ctx, id); err != nil || dev2 != dev {
		t.Fatalf("second attach %q %v, want %s", dev2, err, dev)
	}
	if got, err := b.Get(ctx, id); err != nil || got.Device != dev || got.SizeBytes != vol.SizeBytes {
		t.Fatalf("get %+v %v", got, err)
	}
	if _, err := b.Expand(ctx, id, 128<<20); err != nil {
		t.Fatal(err)
	}
	if size := strings.TrimSpace(testutil.Run(t, "blockdev", "--getsize64", dev)); size != "134217728" {
		t.Errorf("device size %s after expand", size)
	}
	if err := b.SetMeta(ctx, id, map[string]string{"verifiedAtomic": "true"}); err != nil {
		t.Fatal(err)
	}
	vols, err := b.List(ctx)
	if err != nil || len(vols) != 1 || vols[0].Meta["verifiedAtomic"] != "true" || vols[0].Meta["name"] != "loop-test" {
		t.Fatalf("list %+v %v", vols, err)
	}

	// A file the backend did not make survives, even when named like a volume.
	foreign := filepath.Join(dir, volumeIDForName("foreign")+".img")
	if err := os.WriteFile(foreign, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, volumeIDForName("foreign")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}

	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Run(t, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", filepath.Join(dir, id+".img")); strings.TrimSpace(out) != "" {
		t.Errorf("still attached: %s", out)
	}
	for _, p := range []string{id + ".img", id + ".json"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if _, err := b.Get(ctx, id); !errors.Is(err, ErrVolumeNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Errorf("second delete: %v", err)
	}
}
