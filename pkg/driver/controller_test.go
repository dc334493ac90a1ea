package driver

import (
	"context"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
}

var snw = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

func createReq(name string, size int64, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "")},
		Parameters:         params,
	}
}

func TestCreateVolumeCodes(t *testing.T) {
	tests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		want codes.Code
	}{
		{"ok defaults", createReq("a", 1<<30, nil), codes.OK},
		{"ok xfs prefer", createReq("b", 1<<30, map[string]string{"fsType": "xfs", "atomicPolicy": "prefer"}), codes.OK},
		{"ok sidecar params", createReq("c", 1<<30, map[string]string{"csi.storage.k8s.io/pv/name": "pv"}), codes.OK},
		{"ok block", &csi.CreateVolumeRequest{Name: "d", VolumeCapabilities: []*csi.VolumeCapability{blockCap(snw)}}, codes.OK},
		{"no name", createReq("", 1<<30, nil), codes.InvalidArgument},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "e"}, codes.InvalidArgument},
		{"multi node", &csi.CreateVolumeRequest{Name: "f", VolumeCapabilities: []*csi.VolumeCapability{
			mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")}}, codes.InvalidArgument},
		{"no access type", &csi.CreateVolumeRequest{Name: "g", VolumeCapabilities: []*csi.VolumeCapability{
			{AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw}}}}, codes.InvalidArgument},
		{"capability fsType btrfs", &csi.CreateVolumeRequest{Name: "h", VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "btrfs")}}, codes.InvalidArgument},
		{"capability fsType differs from parameter", &csi.CreateVolumeRequest{Name: "i", Parameters: map[string]string{"fsType": "xfs"},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "ext4")}}, codes.InvalidArgument},
		{"unknown parameter", createReq("j", 1<<30, map[string]string{"compression": "on"}), codes.InvalidArgument},
		{"bad fsType", createReq("k", 1<<30, map[string]string{"fsType": "zfs"}), codes.InvalidArgument},
		{"limit below required", &csi.CreateVolumeRequest{Name: "l", VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "")},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30, LimitBytes: 1 << 30}}, codes.OutOfRange},
		{"limit below xfs minimum", &csi.CreateVolumeRequest{Name: "m", Parameters: map[string]string{"fsType": "xfs"},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "")}, CapacityRange: &csi.CapacityRange{LimitBytes: 100 << 20}}, codes.OutOfRange},
		{"negative", createReq("n", -1, nil), codes.InvalidArgument},
		{"too big", createReq("o", 1<<50, nil), codes.ResourceExhausted},
		{"content source", &csi.CreateVolumeRequest{Name: "p", VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "")},
			VolumeContentSource: &csi.VolumeContentSource{}}, codes.InvalidArgument},
		{"other node required", &csi.CreateVolumeRequest{Name: "q", VolumeCapabilities: []*csi.VolumeCapability{mountCap(snw, "")},
			AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{TopologyKey: "node-2"}}}}},
			codes.ResourceExhausted},
	}
	e := newFakeDriver(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.d.CreateVolume(context.Background(), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			if err != nil {
				return
			}
			v := resp.GetVolume()
			if !validVolumeID(v.GetVolumeId()) || v.GetCapacityBytes() < tc.req.GetCapacityRange().GetRequiredBytes() ||
				v.GetCapacityBytes()%(1<<20) != 0 {
				t.Errorf("volume %v", v)
			}
			if seg := v.GetAccessibleTopology()[0].GetSegments()[TopologyKey]; seg != "node-1" {
				t.Errorf("topology %q", seg)
			}
		})
	}
}

func TestCreateVolumeIdempotent(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	first, err := e.d.CreateVolume(ctx, createReq("db", 10<<30, map[string]string{"fsType": "xfs", "atomicWriteUnit": "8Ki"}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		want codes.Code
	}{
		{"same request", createReq("db", 10<<30, map[string]string{"fsType": "xfs", "atomicWriteUnit": "8Ki"}), codes.OK},
		{"same unit spelled in bytes", createReq("db", 10<<30, map[string]string{"fsType": "xfs", "atomicWriteUnit": "8192"}), codes.OK},
		{"different unit", createReq("db", 10<<30, map[string]string{"fsType": "xfs", "atomicWriteUnit": "16Ki"}), codes.AlreadyExists},
		{"different fs", createReq("db", 10<<30, nil), codes.AlreadyExists},
		{"bigger", createReq("db", 20<<30, map[string]string{"fsType": "xfs", "atomicWriteUnit": "8Ki"}), codes.AlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.d.CreateVolume(ctx, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			if err == nil && resp.GetVolume().GetVolumeId() != first.GetVolume().GetVolumeId() {
				t.Errorf("ID %s, want %s", resp.GetVolume().GetVolumeId(), first.GetVolume().GetVolumeId())
			}
		})
	}
}

func TestCreateVolumeRoundsToCluster(t *testing.T) {
	e := newFakeDriver(t)
	resp, err := e.d.CreateVolume(context.Background(), createReq("c", 100<<20+1, map[string]string{"clusterSize": "4Mi"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetVolume().GetCapacityBytes(), int64(104<<20); got != want {
		t.Errorf("capacity %d, want %d", got, want)
	}
}

func TestControllerVolumeCalls(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	vol, err := e.d.CreateVolume(ctx, createReq("v", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	caps := []*csi.VolumeCapability{mountCap(snw, "")}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"validate ok", func() error {
			r, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps})
			if err == nil && r.GetConfirmed() == nil {
				t.Error("not confirmed")
			}
			return err
		}, codes.OK},
		{"validate multi node unconfirmed", func() error {
			r, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id,
				VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "")}})
			if err == nil && r.GetConfirmed() != nil {
				t.Error("confirmed a multi-node mode")
			}
			return err
		}, codes.OK},
		{"validate no id", func() error {
			_, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: caps})
			return err
		}, codes.InvalidArgument},
		{"validate no caps", func() error {
			_, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"validate unknown", func() error {
			_, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "uv-00000000000000000000000000000000", VolumeCapabilities: caps})
			return err
		}, codes.NotFound},
		{"validate path-like id", func() error {
			_, err := e.d.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "../../etc", VolumeCapabilities: caps})
			return err
		}, codes.NotFound},
		{"expand no id", func() error {
			_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return err
		}, codes.InvalidArgument},
		{"expand no range", func() error {
			_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"expand unknown", func() error {
			_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "uv-00000000000000000000000000000000",
				CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return err
		}, codes.NotFound},
		{"expand ok", func() error {
			r, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}, VolumeCapability: caps[0]})
			if err == nil && (r.GetCapacityBytes() < 2<<30 || !r.GetNodeExpansionRequired()) {
				t.Errorf("expand response %v", r)
			}
			return err
		}, codes.OK},
		{"expand beyond capacity", func() error {
			_, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 50}})
			return err
		}, codes.ResourceExhausted},
		{"list bad token", func() error {
			_, err := e.d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "x"})
			return err
		}, codes.Aborted},
		{"list negative", func() error {
			_, err := e.d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: -1})
			return err
		}, codes.InvalidArgument},
		{"capacity bad parameter", func() error {
			_, err := e.d.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"fsType": "ntfs"}})
			return err
		}, codes.InvalidArgument},
		{"delete no id", func() error { _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{}); return err }, codes.InvalidArgument},
		{"delete foreign id", func() error {
			_, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "/etc/passwd"})
			return err
		}, codes.OK},
		{"delete ok", func() error { _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); return err }, codes.OK},
		{"delete again", func() error { _, err := e.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); return err }, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}
}

func TestListVolumesPages(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if _, err := e.d.CreateVolume(ctx, createReq(n, 1<<30, nil)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	tok := ""
	for pages := 0; ; pages++ {
		r, err := e.d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetEntries()) > 2 {
			t.Fatalf("page of %d", len(r.GetEntries()))
		}
		for _, en := range r.GetEntries() {
			if seen[en.GetVolume().GetVolumeId()] {
				t.Fatalf("listed twice: %s", en.GetVolume().GetVolumeId())
			}
			seen[en.GetVolume().GetVolumeId()] = true
		}
		if tok = r.GetNextToken(); tok == "" {
			break
		}
		if pages > 5 {
			t.Fatal("no end")
		}
	}
	if len(seen) != 5 {
		t.Errorf("listed %d volumes, want 5", len(seen))
	}
}

func TestGetCapacityTopology(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	tests := []struct {
		name string
		topo *csi.Topology
		want int64
	}{
		{"any", nil, e.backend.capacity},
		{"this node", &csi.Topology{Segments: map[string]string{TopologyKey: "node-1"}}, e.backend.capacity},
		{"other node", &csi.Topology{Segments: map[string]string{TopologyKey: "node-2"}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.d.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: tc.topo})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetAvailableCapacity() != tc.want {
				t.Errorf("capacity %d, want %d", r.GetAvailableCapacity(), tc.want)
			}
		})
	}
}

func TestControllerVolumeHealth(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	var ids []string
	for _, n := range []string{"h1", "h2", "h3"} {
		r, err := e.d.CreateVolume(ctx, createReq(n, 1<<30, nil))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetVolume().GetVolumeId())
	}
	if err := e.backend.SetMeta(ctx, ids[1], map[string]string{metaVerifyFailed: "true"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		id       string
		want     codes.Code
		statuses int
	}{
		{"no id", "", codes.InvalidArgument, 0},
		{"unknown", "uv-00000000000000000000000000000000", codes.NotFound, 0},
		{"healthy", ids[0], codes.OK, 0},
		{"failed verification", ids[1], codes.OK, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.d.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: tc.id})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
			if err == nil && (r.GetVolumeHealth().GetVolumeId() != tc.id || len(r.GetVolumeHealth().GetHealthStatuses()) != tc.statuses) {
				t.Errorf("health %v", r.GetVolumeHealth())
			}
		})
	}
	list, err := e.d.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetEntries()) != 1 || list.GetEntries()[0].GetVolumeId() != ids[1] {
		t.Errorf("abnormal volumes %v, want only %s", list.GetEntries(), ids[1])
	}
	e.backend.checkErr = ErrBackendUnavailable
	list, err = e.d.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{MaxEntries: 2})
	if err != nil || len(list.GetEntries()) != 2 || list.GetNextToken() == "" {
		t.Errorf("with the backend down: %v, %v", list, err)
	}
}
