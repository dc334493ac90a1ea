package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// Metrics are the driver's Prometheus metrics. Every method is safe on a nil
// *Metrics, which records nothing, so the driver runs the same without
// --metrics-address.
type Metrics struct {
	rpcDuration  *prometheus.HistogramVec
	rpcErrors    *prometheus.CounterVec
	unitMin      *prometheus.GaugeVec
	unitMax      *prometheus.GaugeVec
	verified     *prometheus.GaugeVec
	hardware     *prometheus.GaugeVec
	verifyFailed *prometheus.CounterVec
}

// rpcBuckets span a Probe (milliseconds) to a NodeStageVolume that formats
// and verifies a large volume (tens of seconds).
var rpcBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// NewMetrics creates the driver's metrics and registers them with reg (when
// not nil). Registering again on the same registry reuses the collectors
// already there.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const vol = "volume_id"
	m := &Metrics{
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "untorn_grpc_request_duration_seconds",
			Help:    "Duration of CSI gRPC calls by method and gRPC status code.",
			Buckets: rpcBuckets,
		}, []string{"method", "code"}),
		rpcErrors: counterVec("untorn_grpc_request_errors_total",
			"CSI gRPC calls that returned an error, by method and gRPC status code.", "method", "code"),
		unitMin: gaugeVec("untorn_volume_atomic_write_unit_min_bytes",
			"Smallest atomic write the staged volume's filesystem accepts, as verified at staging.", vol),
		unitMax: gaugeVec("untorn_volume_atomic_write_unit_max_bytes",
			"Largest atomic write the staged volume's filesystem accepts, as verified at staging.", vol),
		verified: gaugeVec("untorn_volume_atomic_write_verified",
			"1 when the staged volume's atomic write guarantee holds (statx and a probe write verified it), 0 when not.", vol),
		hardware: gaugeVec("untorn_volume_atomic_write_hardware",
			"1 when the staged volume's atomic writes are done by the device, 0 when by the filesystem in software.", vol),
		verifyFailed: counterVec("untorn_volume_verification_failures_total",
			"Times the atomic write guarantee of a volume failed to verify.", vol),
	}
	if reg != nil {
		m.rpcDuration = register(reg, m.rpcDuration)
		m.rpcErrors = register(reg, m.rpcErrors)
		m.unitMin = register(reg, m.unitMin)
		m.unitMax = register(reg, m.unitMax)
		m.verified = register(reg, m.verified)
		m.hardware = register(reg, m.hardware)
		m.verifyFailed = register(reg, m.verifyFailed)
	}
	return m
}

// gaugeVec and counterVec make a metric vector with the given labels.
func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// register registers c, or returns the equal collector reg already holds. A
// conflicting registration is a programming error and panics, as
// MustRegister does.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("register metrics: %v", err))
}

// UnaryInterceptor records every call's duration by method and gRPC code,
// and counts the calls that failed.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if m == nil {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		method := methodName(info.FullMethod)
		code := status.Code(err).String()
		m.rpcDuration.WithLabelValues(method, code).Observe(time.Since(start).Seconds())
		if err != nil {
			m.rpcErrors.WithLabelValues(method, code).Inc()
		}
		return resp, err
	}
}

// methodName turns "/csi.v1.Controller/CreateVolume" into "CreateVolume";
// CSI method names are unique across its services.
func methodName(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetVolumeAtomic records a staged volume's verified atomic write range,
// whether the guarantee holds and whether the device does it in hardware.
func (m *Metrics) SetVolumeAtomic(volumeID string, unitMin, unitMax uint64, ok bool, hardware bool) {
	if m == nil {
		return
	}
	m.unitMin.WithLabelValues(volumeID).Set(float64(unitMin))
	m.unitMax.WithLabelValues(volumeID).Set(float64(unitMax))
	m.verified.WithLabelValues(volumeID).Set(boolGauge(ok))
	m.hardware.WithLabelValues(volumeID).Set(boolGauge(hardware))
	// Start the failure counter at 0 so increase() sees the first failure.
	m.verifyFailed.WithLabelValues(volumeID)
}

// VerificationFailed counts a failed verification of a volume's guarantee
// and marks the guarantee as not holding.
func (m *Metrics) VerificationFailed(volumeID string) {
	if m == nil {
		return
	}
	m.verifyFailed.WithLabelValues(volumeID).Inc()
	m.verified.WithLabelValues(volumeID).Set(0)
}

// DeleteVolume drops every series of a volume (it was unstaged or deleted).
func (m *Metrics) DeleteVolume(volumeID string) {
	if m == nil {
		return
	}
	m.unitMin.DeleteLabelValues(volumeID)
	m.unitMax.DeleteLabelValues(volumeID)
	m.verified.DeleteLabelValues(volumeID)
	m.hardware.DeleteLabelValues(volumeID)
	m.verifyFailed.DeleteLabelValues(volumeID)
}

// ServeMetrics serves reg's metrics over HTTP at addr (host:port) on
// /metrics until ctx is done, then shuts the server down and returns nil.
// It returns an error when it cannot listen on addr or the server fails.
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	if reg == nil {
		return errors.New("metrics: no registry to serve")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %q: %w", addr, err)
	}
	return serveMetrics(ctx, ln, reg)
}

func serveMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	klog.InfoS("serving metrics", "address", ln.Addr().String(), "path", "/metrics")
	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("metrics: shut down: %w", err)
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
