package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// MetricsSink receives per-volume atomic-write state. A nil *Metrics
// satisfies it and records nothing.
type MetricsSink interface {
	SetVolumeAtomic(volumeID string, unitMin, unitMax uint64, ok bool, hardware bool)
	DeleteVolume(volumeID string)
	VerificationFailed(volumeID string)
}

// AtomicOps is what the node service needs from pkg/atomic; tests replace it.
type AtomicOps interface {
	Probe(device string) (untorn.DeviceLimits, error)
	Plan(dev untorn.DeviceLimits, req untorn.PlanRequest, device string) (untorn.Plan, error)
	Verify(dir string, unit uint64) (untorn.Verification, error)
	// SetCoWExtSize gives an XFS mount root the copy-on-write extent size
	// hint new files inherit; changed is false when it was already set.
	SetCoWExtSize(mountRoot string, size uint64) (changed bool, err error)
}

// SysfsAtomic implements AtomicOps with pkg/atomic on a sysfs root.
type SysfsAtomic struct{ Sysfs untorn.Sysfs }

func (s SysfsAtomic) Probe(device string) (untorn.DeviceLimits, error) { return s.Sysfs.Probe(device) }
func (SysfsAtomic) Plan(dev untorn.DeviceLimits, req untorn.PlanRequest, device string) (untorn.Plan, error) {
	return untorn.PlanFormat(dev, req, device)
}
func (s SysfsAtomic) Verify(dir string, unit uint64) (untorn.Verification, error) {
	return untorn.VerifyWith(s.Sysfs, dir, unit)
}
func (SysfsAtomic) SetCoWExtSize(mountRoot string, size uint64) (bool, error) {
	return untorn.SetCoWExtSize(mountRoot, size)
}

// Deps are the driver's collaborators, built by the caller.
type Deps struct {
	Backend Backend
	Mounter Mounter
	Exec    exec.Interface
	Atomic  AtomicOps
	Metrics MetricsSink
	// Interceptors run before the driver's logging interceptor (e.g. metrics).
	Interceptors []grpc.UnaryServerInterceptor
}

// Driver serves the CSI Identity, Controller and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts     Options
	version  string
	backend  Backend
	mounter  Mounter
	resizer  *mount.ResizeFs
	exec     exec.Interface
	atomic   AtomicOps
	metrics  MetricsSink
	inflight *inFlight
	state    *stateStore
	icpts    []grpc.UnaryServerInterceptor
	placer   *placer
}

// New builds a driver from validated options and its dependencies.
func New(opts Options, deps Deps) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if deps.Mounter == nil || deps.Exec == nil || deps.Atomic == nil {
		return nil, errors.New("driver: mounter, exec and atomic ops are required")
	}
	if deps.Backend == nil && opts.Mode != ModeController {
		return nil, fmt.Errorf("driver: mode %s needs a volume backend", opts.Mode)
	}
	metrics := deps.Metrics
	if metrics == nil {
		metrics = noMetrics{}
	}
	d := &Driver{
		opts:     opts,
		version:  opts.Version,
		backend:  deps.Backend,
		mounter:  deps.Mounter,
		resizer:  mount.NewResizeFs(deps.Exec),
		exec:     deps.Exec,
		atomic:   deps.Atomic,
		metrics:  metrics,
		inflight: newInFlight(),
		icpts:    deps.Interceptors,
		placer:   newPlacer(),
	}
	if d.version == "" {
		d.version = BuildVersion()
	}
	if opts.Mode != ModeController {
		d.state = &stateStore{dir: filepath.Join(opts.StateDir, "staged")}
	}
	return d, nil
}

type noMetrics struct{}

func (noMetrics) SetVolumeAtomic(string, uint64, uint64, bool, bool) {}
func (noMetrics) DeleteVolume(string)                                {}
func (noMetrics) VerificationFailed(string)                          {}

// Version is set at link time (-X github.com/untorn/untorn/pkg/driver.Version=v1.2.3).
var Version string

// BuildVersion is Version, else the module version from the build info,
// else "devel".
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func (d *Driver) controller() bool { return d.opts.Mode != ModeNode }
func (d *Driver) node() bool       { return d.opts.Mode != ModeController }

// expansionOnly reports whether this is the cluster-wide controller of
// the node-local driver: it has no storage of its own (volumes live on
// the nodes and are created by the node plugin's csi-provisioner), so it
// serves volume expansion only, leaving the growing to NodeExpandVolume.
func (d *Driver) expansionOnly() bool { return d.backend == nil }

// controllerOnlyExpansion rejects, in an expansion-only controller, the
// controller calls that need the node's storage.
func (d *Driver) controllerOnlyExpansion(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if d.expansionOnly() && strings.HasPrefix(info.FullMethod, "/csi.v1.Controller/") {
		switch info.FullMethod {
		case "/csi.v1.Controller/ControllerExpandVolume", "/csi.v1.Controller/ControllerGetCapabilities":
		default:
			return nil, status.Errorf(codes.Unimplemented,
				"%s: the --mode=controller plugin serves volume expansion only; volumes are node-local and the node plugin (--mode=all) serves this call", info.FullMethod)
		}
	}
	return handler(ctx, req)
}

// Server returns a gRPC server with the services of the driver's mode.
func (d *Driver) Server() *grpc.Server {
	icpts := append(append([]grpc.UnaryServerInterceptor{}, d.icpts...), logCalls, d.controllerOnlyExpansion)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(icpts...))
	csi.RegisterIdentityServer(srv, d)
	if d.controller() {
		csi.RegisterControllerServer(srv, d)
	}
	if d.node() {
		csi.RegisterNodeServer(srv, d)
	}
	return srv
}

// Run listens on the endpoint and serves until ctx is cancelled; then it
// stops accepting calls and lets in-flight calls finish (up to a grace
// period).
func (d *Driver) Run(ctx context.Context) error {
	sock, err := SocketPath(d.opts.Endpoint)
	if err != nil {
		return err
	}
	if d.state != nil {
		if err := os.MkdirAll(d.state.dir, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	lis, err := ListenUnix(sock, socketPerm)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	srv := d.Server()
	backend := "none (expansion only)"
	if !d.expansionOnly() {
		backend = d.backend.Name()
		if err := d.backend.Check(ctx); err != nil {
			klog.ErrorS(err, "backend not usable yet; Probe reports not ready", "backend", backend)
		}
	}
	klog.InfoS("serving CSI", "driver", DriverName, "version", d.version, "mode", d.opts.Mode,
		"endpoint", d.opts.Endpoint, "nodeID", d.opts.NodeID, "backend", backend)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("shutting down: no new calls, finishing in-flight calls")
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(gracePeriod):
		klog.InfoS("grace period over, stopping", "gracePeriod", gracePeriod)
		srv.Stop()
	}
	return nil
}

const gracePeriod = 60 * time.Second

// logCalls logs every call (secrets stripped) at V(4) and every failure once.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	klog.V(4).InfoS("call", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	start := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		st, _ := status.FromError(err)
		klog.ErrorS(err, "call failed", "method", info.FullMethod, "code", st.Code(), "duration", time.Since(start))
		return resp, err
	}
	klog.V(4).InfoS("call done", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp), "duration", time.Since(start))
	return resp, nil
}
