package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/untorn/untorn/internal/testutil"
)

// plugin is a real untorn-csi process started by the test.
type plugin struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	conn *grpc.ClientConn
}

// syncBuffer is the plugin's output: os/exec copies into it from its own
// goroutine while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startPlugin(t *testing.T, bin, dir string) *plugin {
	t.Helper()
	sock := filepath.Join(dir, "csi.sock")
	cmd := exec.Command(bin, "--mode=all", "--endpoint=unix://"+sock, "--node-id=restart-node", "--backend=loop",
		"--loop-dir="+filepath.Join(dir, "loop"), "--state-dir="+filepath.Join(dir, "state"),
		"--shim-dir="+filepath.Join(dir, "shim"), "-v=2")
	// A process group of its own: a kill of the group also hits the
	// commands the plugin runs (mkfs, losetup, mount...).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &plugin{cmd: cmd, log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("plugin log:\n%s", p.log)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.conn = conn
	id := csi.NewIdentityClient(conn)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := id.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && r.GetReady().GetValue() {
			return p
		}
		if i == 100 {
			t.Fatalf("plugin not ready: %v\n%s", err, p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill9 stops the plugin the hard way: SIGKILL to its process group, the
// plugin and every command it is running.
func (p *plugin) kill9(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	p.conn.Close()
}

// buildPlugin builds untorn-csi into dir and returns its path.
func buildPlugin(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "untorn-csi")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func fsUUID(t *testing.T, dev string) string {
	t.Helper()
	return strings.TrimSpace(testutil.Run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev))
}

// TestRestart stages and publishes an XFS volume through a real plugin
// process, writes data, kills the plugin with SIGKILL and starts it again:
// staging and publishing again succeed without reformatting and the data
// reads back. It then does the same after a simulated reboot (mounts gone,
// loop device detached), where the plugin must re-attach the image.
func TestRestart(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{"loop", "state", "shim"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildPlugin(t, dir)
	ctx := context.Background()
	vc := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "pods", "target")
	t.Cleanup(func() {
		// Release what a failed run may have left.
		for _, m := range []string{target, staging} {
			testutil.Output("umount", "-l", m)
		}
		imgs, _ := filepath.Glob(filepath.Join(dir, "loop", "*.img"))
		for _, img := range imgs {
			out, _ := testutil.Output("losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img)
			for _, d := range strings.Fields(out) {
				testutil.Output("losetup", "-d", d)
			}
		}
	})
	stageAndPublish := func(p *plugin, id string) {
		t.Helper()
		node := csi.NewNodeClient(p.conn)
		if _, err := node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc}); err != nil {
			t.Fatalf("stage: %v", err)
		}
		if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	p := startPlugin(t, bin, dir)
	vol, err := csi.NewControllerClient(p.conn).CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "restart", Parameters: map[string]string{"fsType": "xfs"},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 512 << 20}, VolumeCapabilities: []*csi.VolumeCapability{vc},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := vol.GetVolume().GetVolumeId()
	img := filepath.Join(dir, "loop", id+".img")
	stageAndPublish(p, id)
	data := bytes.Repeat([]byte("untorn!\n"), 4096)
	if err := os.WriteFile(filepath.Join(target, "data"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "sync")
	dev := strings.TrimSpace(testutil.Run(t, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img))
	uuid := fsUUID(t, dev)

	check := func(phase string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(target, "data"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: data did not read back (%d bytes, %v)", phase, len(got), err)
		}
		d := strings.TrimSpace(testutil.Run(t, "losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img))
		if u := fsUUID(t, d); u != uuid {
			t.Fatalf("%s: filesystem UUID %s, was %s: reformatted", phase, u, uuid)
		}
	}

	// 1. kill -9 with everything still mounted.
	p.kill9(t)
	p = startPlugin(t, bin, dir)
	stageAndPublish(p, id)
	check("after kill -9")

	// 2. kill -9, then what a reboot leaves: no mounts, no loop device.
	p.kill9(t)
	testutil.Run(t, "umount", target)
	testutil.Run(t, "umount", staging)
	testutil.Run(t, "losetup", "-d", dev)
	p = startPlugin(t, bin, dir)
	stageAndPublish(p, id)
	check("after reboot")
	if strings.Contains(p.log.String(), "appears to be unformatted") {
		t.Error("plugin tried to format after the restart")
	}

	// Clean teardown through the plugin leaves nothing behind.
	node := csi.NewNodeClient(p.conn)
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if _, err := csi.NewControllerClient(p.conn).DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("image left: %v", err)
	}
	// Graceful stop on SIGTERM.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
