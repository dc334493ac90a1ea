package driver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMetricsVolume(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	m.SetVolumeAtomic("v1", 4096, 1<<20, true, false)
	m.SetVolumeAtomic("v2", 4096, 16384, true, true)
	m.VerificationFailed("v2")
	m.VerificationFailed("v2")

	names := []string{"untorn_volume_atomic_write_unit_min_bytes", "untorn_volume_atomic_write_unit_max_bytes",
		"untorn_volume_atomic_write_verified", "untorn_volume_atomic_write_hardware", "untorn_volume_verification_failures_total"}
	want := `
# HELP untorn_volume_atomic_write_hardware 1 when the staged volume's atomic writes are done by the device, 0 when by the filesystem in software.
# TYPE untorn_volume_atomic_write_hardware gauge
untorn_volume_atomic_write_hardware{volume_id="v1"} 0
untorn_volume_atomic_write_hardware{volume_id="v2"} 1
# HELP untorn_volume_atomic_write_unit_max_bytes Largest atomic write the staged volume's filesystem accepts, as verified at staging.
# TYPE untorn_volume_atomic_write_unit_max_bytes gauge
untorn_volume_atomic_write_unit_max_bytes{volume_id="v1"} 1.048576e+06
untorn_volume_atomic_write_unit_max_bytes{volume_id="v2"} 16384
# HELP untorn_volume_atomic_write_unit_min_bytes Smallest atomic write the staged volume's filesystem accepts, as verified at staging.
# TYPE untorn_volume_atomic_write_unit_min_bytes gauge
untorn_volume_atomic_write_unit_min_bytes{volume_id="v1"} 4096
untorn_volume_atomic_write_unit_min_bytes{volume_id="v2"} 4096
# HELP untorn_volume_atomic_write_verified 1 when the staged volume's atomic write guarantee holds (statx and a probe write verified it), 0 when not.
# TYPE untorn_volume_atomic_write_verified gauge
untorn_volume_atomic_write_verified{volume_id="v1"} 1
untorn_volume_atomic_write_verified{volume_id="v2"} 0
# HELP untorn_volume_verification_failures_total Times the atomic write guarantee of a volume failed to verify.
# TYPE untorn_volume_verification_failures_total counter
untorn_volume_verification_failures_total{volume_id="v1"} 0
untorn_volume_verification_failures_total{volume_id="v2"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	m.DeleteVolume("v2")
	for _, c := range []prometheus.Collector{m.unitMin, m.unitMax, m.verified, m.hardware, m.verifyFailed} {
		if n := testutil.CollectAndCount(c); n != 1 {
			t.Errorf("after DeleteVolume(v2): %d series, want only v1's", n)
		}
	}
	if got := testutil.ToFloat64(m.verified.WithLabelValues("v1")); got != 1 {
		t.Errorf("v1 verified = %v after deleting v2, want 1", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestMetricsInterceptor(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	intercept := m.UnaryInterceptor()
	calls := []struct {
		method string
		err    error
	}{
		{"/csi.v1.Controller/CreateVolume", nil},
		{"/csi.v1.Controller/CreateVolume", status.Error(codes.ResourceExhausted, "full")},
		{"/csi.v1.Controller/CreateVolume", status.Error(codes.ResourceExhausted, "full")},
		{"/csi.v1.Node/NodeStageVolume", status.Error(codes.FailedPrecondition, "no atomic writes")},
		{"/csi.v1.Node/NodeStageVolume", errors.New("raw error")},
		{"/csi.v1.Identity/Probe", nil},
	}
	for _, c := range calls {
		resp, err := intercept(context.Background(), "req", &grpc.UnaryServerInfo{FullMethod: c.method},
			func(ctx context.Context, req any) (any, error) { return "resp", c.err })
		if resp != "resp" || err != c.err {
			t.Fatalf("interceptor changed the call's result: %v, %v", resp, err)
		}
	}
	errorsWant := `
# HELP untorn_grpc_request_errors_total CSI gRPC calls that returned an error, by method and gRPC status code.
# TYPE untorn_grpc_request_errors_total counter
untorn_grpc_request_errors_total{code="FailedPrecondition",method="NodeStageVolume"} 1
untorn_grpc_request_errors_total{code="ResourceExhausted",method="CreateVolume"} 2
untorn_grpc_request_errors_total{code="Unknown",method="NodeStageVolume"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(errorsWant), "untorn_grpc_request_errors_total"); err != nil {
		t.Error(err)
	}
	counts := map[string]uint64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "untorn_grpc_request_duration_seconds" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			key := ""
			for _, l := range metric.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			counts[key] = metric.GetHistogram().GetSampleCount()
		}
	}
	wantCounts := map[string]uint64{
		"code=OK method=CreateVolume ":                    1,
		"code=ResourceExhausted method=CreateVolume ":     2,
		"code=FailedPrecondition method=NodeStageVolume ": 1,
		"code=Unknown method=NodeStageVolume ":            1,
		"code=OK method=Probe ":                           1,
	}
	if len(counts) != len(wantCounts) {
		t.Errorf("latency series %v, want %v", counts, wantCounts)
	}
	for k, v := range wantCounts {
		if counts[k] != v {
			t.Errorf("latency observations for %s= %d, want %d", k, counts[k], v)
		}
	}
}

func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.SetVolumeAtomic("v", 1, 2, true, true)
	m.VerificationFailed("v")
	m.DeleteVolume("v")
	want := status.Error(codes.NotFound, "x")
	resp, err := m.UnaryInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodeGetInfo"},
		func(ctx context.Context, req any) (any, error) { return 7, want })
	if resp != 7 || err != want {
		t.Errorf("nil metrics interceptor returned %v, %v", resp, err)
	}
}

func TestNewMetricsTwiceSharesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	a.VerificationFailed("v")
	if got := testutil.ToFloat64(b.verifyFailed.WithLabelValues("v")); got != 1 {
		t.Errorf("second Metrics on the same registry sees %v failures, want 1", got)
	}
	if NewMetrics(nil) == nil {
		t.Error("NewMetrics(nil) = nil")
	}
}

func TestServeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg).SetVolumeAtomic("v1", 4096, 65536, true, true)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveMetrics(ctx, ln, reg) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `untorn_volume_atomic_write_unit_max_bytes{volume_id="v1"} 65536`) {
		t.Errorf("GET /metrics: %d\n%s", resp.StatusCode, body)
	}

	// The port is taken: a second server on it must fail at once.
	if err := ServeMetrics(context.Background(), ln.Addr().String(), reg); err == nil {
		t.Error("ServeMetrics on a busy port succeeded")
	}
	if err := ServeMetrics(context.Background(), "127.0.0.1:0", nil); err == nil {
		t.Error("ServeMetrics without a registry succeeded")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveMetrics after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveMetrics did not return after its context was done")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/metrics"); err == nil {
		t.Error("server still answers after its context was done")
	}
}
