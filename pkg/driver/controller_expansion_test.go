package driver

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/untorn/untorn/internal/testutil"
)

// startExpansionController runs the driver as the chart's controller
// Deployment does: --mode=controller, no backend, a real gRPC socket.
func startExpansionController(t *testing.T) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	fexec := &testingexec.FakeExec{}
	d, err := New(Options{Mode: ModeController, Endpoint: "unix://" + sock, NodeID: "controller-0", SysfsRoot: "/sys"},
		Deps{Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fexec), Exec: fexec, Atomic: &fakeAtomic{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	testutil.WaitForFile(t, sock, 5*time.Second)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver: %v", err)
		}
	})
	return conn
}

func TestExpansionOnlyControllerNeedsNoBackendButNodeModesDo(t *testing.T) {
	fexec := &testingexec.FakeExec{}
	deps := Deps{Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fexec), Exec: fexec, Atomic: &fakeAtomic{}}
	opts := Options{Mode: ModeAll, Endpoint: "unix:///run/csi.sock", NodeID: "n1", Backend: "loop", LoopDir: "/var/lib/untorn/loop",
		SysfsRoot: "/sys", StateDir: "/var/lib/untorn", ShimDir: "/usr/lib/untorn/shim"}
	if _, err := New(opts, deps); err == nil || !strings.Contains(err.Error(), "needs a volume backend") {
		t.Fatalf("mode all without a backend: err %v, want one naming the missing backend", err)
	}
	opts = Options{Mode: ModeController, Endpoint: "unix:///run/csi.sock", NodeID: "n1", SysfsRoot: "/sys"}
	if _, err := New(opts, deps); err != nil {
		t.Fatalf("mode controller without backend flags: %v", err)
	}
}

func TestExpansionOnlyController(t *testing.T) {
	conn := startExpansionController(t)
	ctx := context.Background()
	ids := csi.NewIdentityClient(conn)
	ctl := csi.NewControllerClient(conn)

	probe, err := ids.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Fatalf("Probe: %v ready=%v, want ready without any storage", err, probe.GetReady())
	}
	caps, err := ctl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := caps.GetCapabilities(); len(got) != 1 || got[0].GetRpc().GetType() != csi.ControllerServiceCapability_RPC_EXPAND_VOLUME {
		t.Fatalf("capabilities %v, want EXPAND_VOLUME only", got)
	}

	// A new size is accepted, rounded up to a MiB, and left to the node.
	req := int64(3<<30 + 12345)
	resp, err := ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: "uv-0123456789abcdef0123456789abcdef", CapacityRange: &csi.CapacityRange{RequiredBytes: req},
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}},
	})
	if err != nil {
		t.Fatalf("ControllerExpandVolume: %v", err)
	}
	if want := int64(3<<30 + 1<<20); resp.GetCapacityBytes() != want || !resp.GetNodeExpansionRequired() {
		t.Fatalf("got capacity %d node_expansion_required %v, want %d and true", resp.GetCapacityBytes(), resp.GetNodeExpansionRequired(), want)
	}
	// Block volumes too: only the node can grow the backing volume.
	resp, err = ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: "uv-0123456789abcdef0123456789abcdef", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}},
	})
	if err != nil || resp.GetCapacityBytes() != 1<<30 || !resp.GetNodeExpansionRequired() {
		t.Fatalf("block expansion: %v, %v", resp, err)
	}

	for name, tc := range map[string]struct {
		req  *csi.ControllerExpandVolumeRequest
		code codes.Code
	}{
		"no volume id":   {&csi.ControllerExpandVolumeRequest{CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}, codes.InvalidArgument},
		"no range":       {&csi.ControllerExpandVolumeRequest{VolumeId: "uv-1"}, codes.InvalidArgument},
		"limit too low":  {&csi.ControllerExpandVolumeRequest{VolumeId: "uv-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 1<<30 + 1, LimitBytes: 1<<30 + 2}}, codes.OutOfRange},
		"required>limit": {&csi.ControllerExpandVolumeRequest{VolumeId: "uv-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30, LimitBytes: 1 << 30}}, codes.OutOfRange},
	} {
		if _, err := ctl.ControllerExpandVolume(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", name, err, tc.code)
		}
	}

	// Calls that need the node's storage are refused with a reason.
	_, err = ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "expansion only") {
		t.Fatalf("CreateVolume on the controller: %v, want Unimplemented naming expansion only", err)
	}
	if _, err := ctl.ListVolumes(ctx, &csi.ListVolumesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("ListVolumes on the controller: %v, want Unimplemented", err)
	}
	if _, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("NodeGetInfo on the controller: %v, want Unimplemented (no node service)", err)
	}
}
