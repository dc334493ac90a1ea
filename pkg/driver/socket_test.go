package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	mount "k8s.io/mount-utils"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/untorn/untorn/internal/testutil"
)

// withUmask runs the rest of the test under umask mask.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func newSocketDriver(t *testing.T, sock string) *Driver {
	t.Helper()
	fexec := &testingexec.FakeExec{}
	d, err := New(Options{Mode: ModeController, Endpoint: "unix://" + sock, NodeID: "controller-0", SysfsRoot: "/sys"},
		Deps{Mounter: mount.NewSafeFormatAndMount(mount.NewFakeMounter(nil), fexec), Exec: fexec, Atomic: &fakeAtomic{}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCSISocketModeUnderUmask000: under umask 000 the CSI socket is still
// 0660 (no access for other users), nothing else is left beside it, it
// answers, and it is removed at shutdown.
func TestCSISocketModeUnderUmask000(t *testing.T) {
	withUmask(t, 0)
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	d := newSocketDriver(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	testutil.WaitForFile(t, sock, 5*time.Second)

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("socket dir holds %q, want only csi.sock", names)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}); err != nil {
		t.Fatalf("GetPluginInfo through the socket: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

// TestCSISocketPathHoldsAnotherFile: a file at the endpoint that is not a
// socket is refused and left as it was; a stale socket is replaced.
func TestCSISocketPathHoldsAnotherFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	if err := os.WriteFile(sock, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := newSocketDriver(t, sock).Run(context.Background())
	if !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Run with a regular file at the endpoint: %v, want ErrInvalidOption", err)
	}
	if got, err := os.ReadFile(sock); err != nil || string(got) != "keep me" {
		t.Fatalf("file at the endpoint changed: %q %v", got, err)
	}

	stale := filepath.Join(dir, "stale.sock")
	lis, err := ListenUnix(stale, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lis.(*socketListener).UnixListener.Close() // leaves the socket file behind, as a killed plugin does
	lis2, err := ListenUnix(stale, 0o600)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	lis2.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}
