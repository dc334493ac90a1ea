package driver

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundUpCheckedAndLCM(t *testing.T) {
	for _, tc := range []struct {
		n, unit, want int64
		ok            bool
	}{
		{0, 1 << 20, 0, true},
		{1, 1 << 20, 1 << 20, true},
		{1 << 20, 1 << 20, 1 << 20, true},
		{math.MaxInt64 - 1<<20 + 1, 1 << 20, math.MaxInt64 - 1<<20 + 1, true},
		{math.MaxInt64 - 1<<20 + 2, 1 << 20, 0, false},
		{math.MaxInt64, 1 << 20, 0, false},
		{math.MaxInt64, 1, math.MaxInt64, true},
		{-1, 1 << 20, 0, false},
		{5, 0, 0, false},
	} {
		if got, ok := roundUpChecked(tc.n, tc.unit); got != tc.want || ok != tc.ok {
			t.Errorf("roundUpChecked(%d, %d) = %d, %v; want %d, %v", tc.n, tc.unit, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		a, b, want int64
		ok         bool
	}{
		{1 << 20, 4 << 20, 4 << 20, true},
		{3 << 20, 4 << 20, 12 << 20, true},
		{math.MaxInt64, math.MaxInt64 - 1, 0, false},
		{1 << 40, (1 << 40) - 1, 0, false},
		{0, 5, 0, false},
	} {
		if got, ok := lcmChecked(tc.a, tc.b); got != tc.want || ok != tc.ok {
			t.Errorf("lcmChecked(%d, %d) = %d, %v; want %d, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSizesNearInt64LimitAreOutOfRange: a required size whose rounding
// overflows is OutOfRange with nothing created, for CreateVolume (with and
// without a cluster size) and ControllerExpandVolume; the volume keeps its
// size.
func TestSizesNearInt64LimitAreOutOfRange(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	for _, params := range []map[string]string{nil, {"clusterSize": "4Mi"}, {"fsType": "xfs"}} {
		for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 1<<19} {
			_, err := e.d.CreateVolume(ctx, createReq("huge", size, params))
			if status.Code(err) != codes.OutOfRange {
				t.Errorf("CreateVolume %d bytes %v: %v, want OutOfRange", size, params, err)
			}
		}
	}
	if vols, _ := e.backend.List(ctx); len(vols) != 0 {
		t.Fatalf("volumes after refused creates: %+v", vols)
	}
	resp, err := e.d.CreateVolume(ctx, createReq("v", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	_, err = e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csi.CapacityRange{RequiredBytes: math.MaxInt64}})
	if status.Code(err) != codes.OutOfRange {
		t.Errorf("ControllerExpandVolume to MaxInt64: %v, want OutOfRange", err)
	}
	if v, _ := e.backend.Get(ctx, id); v.SizeBytes != 1<<30 {
		t.Errorf("size after a refused expansion: %d", v.SizeBytes)
	}
}

// TestExpansionOnlyControllerSizeOverflow: the expansion-only controller
// refuses a size it cannot round instead of accepting a wrapped one.
func TestExpansionOnlyControllerSizeOverflow(t *testing.T) {
	ctl := csi.NewControllerClient(startExpansionController(t))
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 1<<19} {
		resp, err := ctl.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{
			VolumeId: "uv-0123456789abcdef0123456789abcdef", CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
		if status.Code(err) != codes.OutOfRange {
			t.Errorf("expand to %d: %v %v, want OutOfRange", size, resp, err)
		}
	}
}

// shortExpandBackend grows nothing and reports success, as a backend with
// an overflowing size computation did.
type shortExpandBackend struct{ *fakeBackend }

func (b shortExpandBackend) Expand(ctx context.Context, id string, _ int64) (BackendVolume, error) {
	return b.Get(ctx, id)
}

// TestControllerExpandNeverReportsLess: when the backend returns a volume
// smaller than the size asked for, ControllerExpandVolume fails instead of
// answering OK with the old capacity.
func TestControllerExpandNeverReportsLess(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	resp, err := e.d.CreateVolume(ctx, createReq("v", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.d.backend = shortExpandBackend{e.backend}
	r, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
	if err == nil {
		t.Fatalf("ControllerExpandVolume answered %v for a volume that did not grow", r)
	}
}

// TestDeleteVolumeCleansUnfinishedCreate: when the backend has no complete
// volume, DeleteVolume still asks it to remove what an interrupted create
// left (the backend leaves alone what it did not create).
func TestDeleteVolumeCleansUnfinishedCreate(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	rec := &deleteRecorder{fakeBackend: e.backend}
	e.d.backend = rec
	id := volumeIDForName("never-finished")
	if _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	if len(rec.deleted) != 1 || rec.deleted[0] != id {
		t.Errorf("backend Delete calls %q, want [%s]", rec.deleted, id)
	}
}

type deleteRecorder struct {
	*fakeBackend
	deleted []string
}

func (b *deleteRecorder) Delete(ctx context.Context, id string) error {
	b.deleted = append(b.deleted, id)
	return b.fakeBackend.Delete(ctx, id)
}

// TestLVMRefusesWhatItDidNotCreate: an LV of the volume's name that appears
// between the lookup and lvcreate is not adopted; sizes that cannot be
// rounded to extents are OutOfRange before any command runs; an lvextend
// that leaves the LV smaller is an error, never success.
func TestLVMRefusesWhatItDidNotCreate(t *testing.T) {
	ctx := context.Background()
	b := NewLVMBackend("vg0", scriptLVM(t, []lvmStep{
		{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
		{argv: lvmCreateArgs, rec: "lvcreate-exists"},
		{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-foreign", edit: func(s string) string {
			return strings.ReplaceAll(s, `"lv_name":"root"`, `"lv_name":"`+lvmID1+`"`)
		}},
	}))
	_, err := b.Create(ctx, lvmID1, 8<<20, lvmTestMeta)
	if !errors.Is(err, ErrAlreadyExists) || errors.Is(err, ErrVolumeNotFound) {
		t.Errorf("Create racing a foreign LV: %v, want ErrAlreadyExists only", err)
	}

	none := NewLVMBackend("vg0", scriptLVM(t, nil))
	if _, err := none.Create(ctx, lvmID1, math.MaxInt64, lvmTestMeta); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Create MaxInt64: %v, want ErrOutOfRange", err)
	}
	if _, err := none.Expand(ctx, lvmID1, math.MaxInt64-1<<20); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Expand near MaxInt64: %v, want ErrOutOfRange", err)
	}

	short := NewLVMBackend("vg0", scriptLVM(t, []lvmStep{
		{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		{argv: []string{"lvextend", "-L", "16777216b", "vg0/" + lvmID1}, rec: "lvextend"},
		{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
	}))
	if v, err := short.Expand(ctx, lvmID1, 16<<20); err == nil {
		t.Errorf("Expand reported %+v though lvs shows the LV at its old size", v)
	}
}
