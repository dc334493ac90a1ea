package driver

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
)

// DriverName is the CSI driver name.
const DriverName = "untorn.csi.dev"

// TopologyKey is the topology segment that pins a volume to its node.
const TopologyKey = "topology.untorn.csi.dev/node"

// Mode selects which CSI services the process serves.
type Mode string

const (
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	ModeAll        Mode = "all"
)

// ErrInvalidOption: a command-line option is wrong; the message names it.
var ErrInvalidOption = errors.New("invalid option")

// Options configure the driver; cmd/untorn-csi fills them from flags.
type Options struct {
	Mode     Mode
	Endpoint string // unix:///path/csi.sock
	NodeID   string
	// Backend is "loop" or "lvm".
	Backend     string
	LoopDir     string
	LoopReserve int64 // bytes kept free in LoopDir
	VolumeGroup string
	SysfsRoot   string
	// StateDir holds the node's record of staged volumes.
	StateDir       string
	MetricsAddress string
	// ShimDir is served read-only as the inline ephemeral volume type "shim".
	ShimDir string
	// MaxVolumes is reported by NodeGetInfo (0 = no limit).
	MaxVolumes int64
	// Version overrides the version from the build info.
	Version string
}

// Validate checks the options and returns an error naming the first bad one.
func (o *Options) Validate() error {
	switch o.Mode {
	case ModeController, ModeNode, ModeAll:
	default:
		return fmt.Errorf("%w: --mode %q: accepted: controller, node, all", ErrInvalidOption, o.Mode)
	}
	if _, err := SocketPath(o.Endpoint); err != nil {
		return err
	}
	if o.NodeID == "" {
		return fmt.Errorf("%w: --node-id is required", ErrInvalidOption)
	}
	if !validToken(o.NodeID) || len(o.NodeID) > 63 {
		return fmt.Errorf("%w: --node-id %q: must be 1-63 characters [A-Za-z0-9._-] starting with a letter or digit (a Kubernetes label value)", ErrInvalidOption, o.NodeID)
	}
	switch {
	case o.Mode == ModeController:
		// No storage: the controller serves expansion only.
	case o.Backend == "loop":
		if o.LoopDir == "" || !filepath.IsAbs(o.LoopDir) {
			return fmt.Errorf("%w: --loop-dir %q: an absolute directory is required with --backend=loop", ErrInvalidOption, o.LoopDir)
		}
		if o.LoopReserve < 0 {
			return fmt.Errorf("%w: --loop-reserve must not be negative", ErrInvalidOption)
		}
	case o.Backend == "lvm":
		if o.VolumeGroup == "" {
			return fmt.Errorf("%w: --volume-group: a volume group name is required with --backend=lvm", ErrInvalidOption)
		}
		if err := ValidateVGName(o.VolumeGroup); err != nil {
			return fmt.Errorf("%w: --volume-group: %v", ErrInvalidOption, err)
		}
	default:
		return fmt.Errorf("%w: --backend %q: accepted: loop, lvm", ErrInvalidOption, o.Backend)
	}
	if o.SysfsRoot == "" || !filepath.IsAbs(o.SysfsRoot) {
		return fmt.Errorf("%w: --sysfs-root %q must be an absolute directory", ErrInvalidOption, o.SysfsRoot)
	}
	if o.Mode != ModeController {
		if o.StateDir == "" || !filepath.IsAbs(o.StateDir) {
			return fmt.Errorf("%w: --state-dir %q must be an absolute directory", ErrInvalidOption, o.StateDir)
		}
		if o.ShimDir == "" || !filepath.IsAbs(o.ShimDir) {
			return fmt.Errorf("%w: --shim-dir %q must be an absolute directory", ErrInvalidOption, o.ShimDir)
		}
	}
	if o.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(o.MetricsAddress); err != nil {
			return fmt.Errorf("%w: --metrics-address %q: want [host]:port: %v", ErrInvalidOption, o.MetricsAddress, err)
		}
	}
	if o.MaxVolumes < 0 {
		return fmt.Errorf("%w: --max-volumes must not be negative", ErrInvalidOption)
	}
	return nil
}

// SocketPath returns the file path of a unix:// endpoint.
func SocketPath(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "unix" {
		return "", fmt.Errorf("%w: --endpoint %q: want unix:///path/to/csi.sock", ErrInvalidOption, endpoint)
	}
	p := u.Path
	if p == "" {
		p = u.Opaque
	}
	if u.Host != "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: --endpoint %q: want unix:///path/to/csi.sock", ErrInvalidOption, endpoint)
	}
	return filepath.Clean(p), nil
}
