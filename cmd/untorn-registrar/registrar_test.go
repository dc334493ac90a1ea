package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/untorn/untorn/internal/testutil"
)

func TestValidate(t *testing.T) {
	good := options{csiAddress: "/csi/csi.sock", kubeletRegistrationPath: "/var/lib/kubelet/plugins/d/csi.sock", registrationDir: "/registration"}
	tests := []struct {
		name   string
		change func(*options)
		want   error
	}{
		{"valid", func(*options) {}, nil},
		{"no csi address", func(o *options) { o.csiAddress = "" }, ErrInvalidOption},
		{"no kubelet path", func(o *options) { o.kubeletRegistrationPath = "" }, ErrInvalidOption},
		{"relative kubelet path", func(o *options) { o.kubeletRegistrationPath = "plugins/csi.sock" }, ErrInvalidOption},
		{"no registration dir", func(o *options) { o.registrationDir = "" }, ErrInvalidOption},
		{"negative timeout", func(o *options) { o.waitTimeout = -time.Second }, ErrInvalidOption},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.change(&o)
			if err := o.validate(); !errors.Is(err, tc.want) {
				t.Fatalf("validate() = %v, want %v", err, tc.want)
			}
		})
	}
}

// identity is a CSI driver that only answers GetPluginInfo.
type identity struct {
	csi.UnimplementedIdentityServer
	name string
}

func (i identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: i.name, VendorVersion: "test"}, nil
}

func serveDriver(t *testing.T, sock, name string) {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, identity{name: name})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
}

// shortDir returns a directory with a path short enough for unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func registrationClient(t *testing.T, sock string) registerapi.RegistrationClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return registerapi.NewRegistrationClient(conn)
}

// TestRegistration plays the kubelet: the driver comes up late, the
// registration socket appears only after it answers, GetInfo describes the
// driver, and the end of the run (shutdown or refusal) removes the socket.
func TestRegistration(t *testing.T) {
	tests := []struct {
		name       string
		configured string // --driver-name
		wantName   string
		refuse     bool
		wantErr    error
	}{
		{name: "name from driver, shutdown", wantName: "untorn.csi.dev"},
		{name: "configured name", configured: "other.csi.dev", wantName: "other.csi.dev"},
		{name: "kubelet refuses", wantName: "untorn.csi.dev", refuse: true, wantErr: ErrRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			regDir := filepath.Join(dir, "registry")
			if err := os.Mkdir(regDir, 0o755); err != nil {
				t.Fatal(err)
			}
			o := options{
				csiAddress:              filepath.Join(dir, "csi.sock"),
				kubeletRegistrationPath: "/var/lib/kubelet/plugins/untorn.csi.dev/csi.sock",
				registrationDir:         regDir,
				driverName:              tc.configured,
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(ctx, o, logr.Discard()) }()

			regSock := filepath.Join(regDir, tc.wantName+"-reg.sock")
			time.Sleep(3 * pollInterval)
			if _, err := os.Stat(regSock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("registration socket exists before the driver answers (stat: %v)", err)
			}
			serveDriver(t, o.csiAddress, "untorn.csi.dev")
			testutil.WaitForFile(t, regSock, 20*time.Second)

			c := registrationClient(t, regSock)
			// the socket file exists from bind(), a moment before listen()
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			defer ccancel()
			info, err := c.GetInfo(cctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != registerapi.CSIPlugin || info.Name != tc.wantName || info.Endpoint != o.kubeletRegistrationPath {
				t.Fatalf("GetInfo = %+v", info)
			}
			if len(info.SupportedVersions) == 0 {
				t.Fatal("GetInfo lists no supported versions")
			}
			if _, err := c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: !tc.refuse, Error: "test refusal"}); err != nil {
				t.Fatal(err)
			}
			if !tc.refuse {
				select {
				case err := <-done:
					t.Fatalf("run ended after a successful registration: %v", err)
				case <-time.After(200 * time.Millisecond):
				}
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("run() = %v, want %v", err, tc.wantErr)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("run did not return")
			}
			if _, err := os.Stat(regSock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("registration socket left behind (stat: %v)", err)
			}
		})
	}
}

func TestWaitTimeout(t *testing.T) {
	dir := shortDir(t)
	o := options{csiAddress: filepath.Join(dir, "absent.sock"), kubeletRegistrationPath: "/x/csi.sock", registrationDir: dir, waitTimeout: time.Second}
	err := run(context.Background(), o, logr.Discard())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run() = %v, want DeadlineExceeded", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left in the registration dir: %v", entries)
	}
}

// TestRegistrationSocketModeAndForeignFile: under umask 000 the
// registration socket is 0600; a file at its path that is not a socket
// makes run fail and is left as it was.
func TestRegistrationSocketModeAndForeignFile(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := shortDir(t)
	regDir := filepath.Join(dir, "registry")
	if err := os.Mkdir(regDir, 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{csiAddress: filepath.Join(dir, "csi.sock"), kubeletRegistrationPath: "/var/lib/kubelet/plugins/untorn.csi.dev/csi.sock",
		registrationDir: regDir}
	serveDriver(t, o.csiAddress, "untorn.csi.dev")
	regSock := filepath.Join(regDir, "untorn.csi.dev-reg.sock")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, logr.Discard()) }()
	testutil.WaitForFile(t, regSock, 20*time.Second)
	fi, err := os.Lstat(regSock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("registration socket mode %v, want a socket with 0600", fi.Mode())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(regSock, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, o, logr.Discard()); err == nil {
		t.Fatal("run replaced a regular file at the registration socket path")
	}
	if got, err := os.ReadFile(regSock); err != nil || string(got) != "keep me" {
		t.Fatalf("file at the registration socket path changed: %q %v", got, err)
	}
}
