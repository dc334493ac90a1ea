package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"testing"

	"k8s.io/utils/exec"

	"github.com/untorn/untorn/internal/testutil"
)

// lvmScratch runs every lvm command only against one device and without
// device-mapper (--driverloaded n): lvm2 then reads and writes real VG
// metadata but activates nothing, so the test needs no device-mapper and
// leaves the host's LVM alone.
type lvmScratch struct {
	exec.Interface
	opts []string
}

func (r lvmScratch) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	return r.Interface.CommandContext(ctx, cmd, append(append([]string{}, r.opts...), args...)...)
}

// TestLVMBackendRealLVM drives the backend through the real lvm2 commands on
// a volume group on a loop device, so lvm's own JSON, sizes, tags and error
// messages are what the backend parses.
func TestLVMBackendRealLVM(t *testing.T) {
	testutil.RequireRoot(t)
	dev := testutil.LoopDevice(t, 1<<30)
	opts := []string{"--devices", dev, "--driverloaded", "n"}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	vg := "untorntest" + hex.EncodeToString(rnd[:])
	testutil.Run(t, "pvcreate", append(opts, dev)...)
	testutil.Run(t, "vgcreate", append(opts, "--setautoactivation", "n", vg, dev)...)
	t.Cleanup(func() {
		if out, err := testutil.Output("vgremove", append(opts, "-y", vg)...); err != nil {
			t.Errorf("vgremove: %v\n%s", err, out)
		}
		testutil.Output("pvremove", append(opts, "-y", dev)...)
	})

	ctx := context.Background()
	b := NewLVMBackend(vg, lvmScratch{exec.New(), opts})
	if err := b.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if b.AllocationUnit() != 4<<20 {
		t.Errorf("AllocationUnit = %d, want 4 MiB", b.AllocationUnit())
	}
	total, err := b.Capacity(ctx)
	if err != nil || total <= 1000<<20 || total > 1<<30 {
		t.Fatalf("Capacity = %d, %v; want the VG's ~1 GiB", total, err)
	}

	id1, id2 := "uv-0123456789abcdef0123456789abcdef", "uv-fedcba9876543210fedcba9876543210"
	meta := map[string]string{"name": "pvc-1", "csi.storage.k8s.io/pvc/name": "data, with = and ✓"}
	v, err := b.Create(ctx, id1, 8<<20, meta)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if v.ID != id1 || v.SizeBytes != 8<<20 || !maps.Equal(v.Meta, meta) {
		t.Errorf("Create = %+v, want 8 MiB with %v", v, meta)
	}
	if again, err := b.Create(ctx, id1, 16<<20, map[string]string{"name": "other"}); err != nil || again.SizeBytes != 8<<20 || !maps.Equal(again.Meta, meta) {
		t.Errorf("second Create = %+v, %v; want the first volume unchanged", again, err)
	}
	if v, err := b.Create(ctx, id2, 5<<20, nil); err != nil || v.SizeBytes != 8<<20 {
		t.Errorf("Create 5 MiB = %+v, %v; want it rounded up to 2 extents", v, err)
	}

	// An LV someone else made in the VG: never listed, changed or removed.
	testutil.Run(t, "lvcreate", append(opts, "--yes", "-n", "foreign", "-L", "4m", vg)...)
	if _, err := b.Create(ctx, "foreign", 4<<20, nil); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("Create over a foreign LV: %v, want ErrAlreadyExists", err)
	}
	if err := b.Delete(ctx, "foreign"); err != nil {
		t.Errorf("Delete of a foreign LV: %v, want nil (left alone)", err)
	}
	testutil.Run(t, "lvs", append(opts, vg+"/foreign")...)

	list, err := b.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != id1 || list[1].ID != id2 {
		t.Fatalf("List = %+v, %v; want %s and %s", list, err, id1, id2)
	}

	if err := b.SetMeta(ctx, id1, map[string]string{"name": "pvc-2", "unitMax": "65536"}); err != nil {
		t.Fatalf("SetMeta: %v", err)
	}
	want := map[string]string{"name": "pvc-2", "unitMax": "65536", "csi.storage.k8s.io/pvc/name": meta["csi.storage.k8s.io/pvc/name"]}
	if v, err := b.Get(ctx, id1); err != nil || !maps.Equal(v.Meta, want) {
		t.Errorf("after SetMeta Get = %+v, %v; want meta %v", v, err, want)
	}
	if err := b.SetMeta(ctx, id1, map[string]string{"unitMax": ""}); err != nil {
		t.Fatalf("SetMeta removing a key: %v", err)
	}
	delete(want, "unitMax")
	if v, err := b.Get(ctx, id1); err != nil || !maps.Equal(v.Meta, want) {
		t.Errorf("after removing unitMax Get = %+v, %v; want meta %v", v, err, want)
	}

	if v, err := b.Expand(ctx, id1, 16<<20); err != nil || v.SizeBytes != 16<<20 {
		t.Errorf("Expand = %+v, %v; want 16 MiB", v, err)
	}
	if v, err := b.Expand(ctx, id1, 4<<20); err != nil || v.SizeBytes != 16<<20 {
		t.Errorf("Expand to less = %+v, %v; want 16 MiB kept", v, err)
	}
	if free, err := b.Capacity(ctx); err != nil || free != total-28<<20 {
		t.Errorf("Capacity = %d, %v; want %d", free, err, total-28<<20)
	}
	if _, err := b.Create(ctx, "uv-00000000000000000000000000000000", 10<<30, nil); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Create 10 GiB: %v, want ErrNoSpace", err)
	}
	if _, err := b.Expand(ctx, id1, 10<<30); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Expand to 10 GiB: %v, want ErrNoSpace", err)
	}

	for i := 0; i < 2; i++ {
		if err := b.Delete(ctx, id1); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if _, err := b.Get(ctx, id1); !errors.Is(err, ErrVolumeNotFound) {
		t.Errorf("Get after Delete: %v, want ErrVolumeNotFound", err)
	}
	if _, err := b.Expand(ctx, id1, 16<<20); !errors.Is(err, ErrVolumeNotFound) {
		t.Errorf("Expand after Delete: %v, want ErrVolumeNotFound", err)
	}

	missing := NewLVMBackend(vg+"x", lvmScratch{exec.New(), opts})
	if err := missing.Check(ctx); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("Check on a missing VG: %v, want ErrBackendUnavailable", err)
	}
	if _, err := missing.Create(ctx, id1, 8<<20, nil); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("Create on a missing VG: %v, want ErrBackendUnavailable", err)
	}
	if err := missing.Delete(ctx, id1); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("Delete on a missing VG: %v, want ErrBackendUnavailable", err)
	}
	if _, err := NewLVMBackend(vg, lvmScratch{exec.New(), opts}).List(ctx); err != nil {
		t.Errorf("List: %v", err)
	}
}
