package driver_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/utils/exec"

	"github.com/untorn/untorn/internal/testutil"
	"github.com/untorn/untorn/pkg/driver"
)

func dial(t *testing.T, endpoint string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(endpoint, "unix://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
}

// TestBadInput runs against the real driver on the loop backend: every
// StorageClass parameter with a wrong value is InvalidArgument naming the
// parameter; CreateVolume of an ext4 volume with atomicPolicy require on
// the loop backend (no hardware atomic writes) is ResourceExhausted and
// carves nothing; and such a volume made anyway (the node's devices
// changed) fails NodeStageVolume with FailedPrecondition without writing a
// byte to the device.
func TestBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	endpoint, dir := startDriver(t, "bad-input-node")
	conn := dial(t, endpoint)
	ctl, node := csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	ctx := context.Background()

	bad := []struct {
		param, value string
	}{
		{"fsType", "btrfs"}, {"fsType", "EXT4"}, {"fsType", ""},
		{"atomicWriteUnit", "12Ki"}, {"atomicWriteUnit", "1k"}, {"atomicWriteUnit", "2Mi"}, {"atomicWriteUnit", "0"},
		{"atomicWriteUnit", "sixteen"}, {"atomicWriteUnit", "16.5Ki"},
		{"clusterSize", "48Ki"}, {"clusterSize", "128Mi"}, {"clusterSize", "4Ki"}, {"clusterSize", "-64Ki"},
		{"atomicPolicy", "best-effort"}, {"atomicPolicy", "REQUIRE"}, {"atomicPolicy", ""},
		{"atomicSource", "software"}, {"atomicSource", "Hardware"}, {"atomicSource", ""},
		{"mkfsOptions", "-O ^has_journal"}, {"fstype", "ext4"},
	}
	for _, b := range bad {
		t.Run(fmt.Sprintf("%s=%q", b.param, b.value), func(t *testing.T) {
			_, err := ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name:               "bad-" + b.param,
				Parameters:         map[string]string{b.param: b.value},
				VolumeCapabilities: []*csi.VolumeCapability{mountCapability()},
			})
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument (%v)", st.Code(), err)
			}
			if !strings.Contains(st.Message(), b.param) {
				t.Errorf("message %q does not name %s", st.Message(), b.param)
			}
		})
	}
	if vols, err := ctl.ListVolumes(ctx, &csi.ListVolumesRequest{}); err != nil || len(vols.GetEntries()) != 0 {
		t.Fatalf("bad requests left volumes: %v %v", vols, err)
	}

	t.Run("ext4 require on loop", func(t *testing.T) {
		params := map[string]string{"fsType": "ext4", "atomicPolicy": "require"}
		_, err := ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name:               "ext4-require",
			Parameters:         params,
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 256 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{mountCapability()},
		})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("CreateVolume: code %v, want ResourceExhausted (%v)", status.Code(err), err)
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "loop")); len(left) != 0 {
			t.Fatalf("a refused CreateVolume left %v in the loop directory", left)
		}
		// The same volume carved by the backend directly, as if the node
		// had lost its atomic writes after CreateVolume.
		volCtx, err := driver.ValidateCreateParameters(params)
		if err != nil {
			t.Fatal(err)
		}
		volCtx["name"] = "ext4-require"
		id := "uv-0123456789abcdef0123456789abcdef"
		if _, err := driver.NewLoopBackend(filepath.Join(dir, "loop"), 1<<30, exec.New()).Create(ctx, id, 256<<20, volCtx); err != nil {
			t.Fatal(err)
		}
		defer ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
		staging := filepath.Join(dir, "staging-require")
		_, err = node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCapability()})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
		}
		t.Logf("refusal: %v", status.Convert(err).Message())
		if ok, _ := isMounted(staging); ok {
			t.Error("staging path mounted")
		}
		// Nothing formatted: blkid finds nothing and the sparse image has
		// no block allocated.
		img := filepath.Join(dir, "loop", id+".img")
		dev := strings.TrimSpace(testutil.Run(t, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img))
		if dev != "" {
			if out, err := testutil.Output("blkid", "-p", dev); err == nil {
				t.Errorf("device %s holds a signature: %s", dev, out)
			}
		}
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks != 0 {
			t.Errorf("image has %d blocks written", st.Blocks)
		}
	})
}

func isMounted(p string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true, nil
		}
	}
	return false, nil
}
