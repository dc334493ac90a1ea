package csiclient

import (
	"context"
	"flag"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(_ context.Context, _ *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "test.csi", VendorVersion: "1"}, nil
}

func TestDialEndpoints(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "csi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	csi.RegisterIdentityServer(s, identity{})
	go func() { _ = s.Serve(l) }()
	defer s.Stop()
	for _, ep := range []string{sock, "unix://" + sock, "unix:" + sock} {
		c, err := Dial(ep, time.Minute)
		if err != nil {
			t.Fatalf("Dial(%q): %v", ep, err)
		}
		info, err := c.Identity.GetPluginInfo(c.Ctx, &csi.GetPluginInfoRequest{})
		c.Close()
		if err != nil || info.GetName() != "test.csi" {
			t.Fatalf("Dial(%q): GetPluginInfo = %v, %v", ep, info, err)
		}
	}
	for _, ep := range []string{"", "unix://", "unix:"} {
		if _, err := Dial(ep, time.Minute); err == nil {
			t.Errorf("Dial(%q) succeeded, want an error naming the endpoint", ep)
		}
	}
}

func TestCapability(t *testing.T) {
	if b := Capability(true, "xfs"); b.GetBlock() == nil || b.GetMount() != nil {
		t.Errorf("block capability = %v", b)
	}
	m := Capability(false, "xfs")
	if m.GetMount().GetFsType() != "xfs" || m.GetBlock() != nil {
		t.Errorf("mount capability = %v", m)
	}
	if m.GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		t.Errorf("access mode = %v", m.GetAccessMode())
	}
}

func TestParams(t *testing.T) {
	p := Params{}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(p, "param", "")
	if err := fs.Parse([]string{"-param", "fsType=xfs", "-param", "atomicWriteUnit=16Ki", "-param", "empty="}); err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 || p["fsType"] != "xfs" || p["atomicWriteUnit"] != "16Ki" || p["empty"] != "" {
		t.Errorf("params = %v", p)
	}
	for _, bad := range []string{"novalue", "=x"} {
		if err := p.Set(bad); err == nil {
			t.Errorf("Set(%q) succeeded", bad)
		}
	}
}
