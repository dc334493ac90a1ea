// Package csiclient is the one CSI client of the project's tools: the
// quick start's and benchmarks' csiclient command and the VM tests'
// vmtool both dial a plugin, build volume capabilities and read
// StorageClass parameters from flags through it.
package csiclient

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Client holds the three CSI services of one connection and a context
// bounded by the timeout given to Dial.
type Client struct {
	Identity   csi.IdentityClient
	Controller csi.ControllerClient
	Node       csi.NodeClient
	Ctx        context.Context

	conn   *grpc.ClientConn
	cancel context.CancelFunc
}

// Dial connects to a plugin's socket: endpoint is a path or a unix:// or
// unix: address.
func Dial(endpoint string, timeout time.Duration) (*Client, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(endpoint, "unix://"), "unix:")
	if path == "" {
		return nil, fmt.Errorf("csi endpoint %q: no socket path", endpoint)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("csi endpoint %q: %w", endpoint, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return &Client{
		Identity:   csi.NewIdentityClient(conn),
		Controller: csi.NewControllerClient(conn),
		Node:       csi.NewNodeClient(conn),
		Ctx:        ctx,
		conn:       conn,
		cancel:     cancel,
	}, nil
}

// Close ends the context and the connection.
func (c *Client) Close() {
	c.cancel()
	_ = c.conn.Close()
}

// Capability is a single-node-writer volume: a raw block device when block
// is set, else a filesystem of fsType ("" leaves the choice to the class).
func Capability(block bool, fsType string) *csi.VolumeCapability {
	vc := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	if block {
		vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		vc.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}}
	}
	return vc
}

// Params collects repeated KEY=VALUE flags (a flag.Value), e.g. the
// StorageClass parameters of a CreateVolume.
type Params map[string]string

func (p Params) String() string { return fmt.Sprint(map[string]string(p)) }

// Set adds one KEY=VALUE.
func (p Params) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	p[k] = v
	return nil
}
