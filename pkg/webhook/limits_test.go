package webhook_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/pkg/webhook"
)

// short limits so that a test sees them act; the defaults are longer.
var testLimits = webhook.Limits{
	ReadHeaderTimeout: 300 * time.Millisecond,
	ReadTimeout:       600 * time.Millisecond,
	WriteTimeout:      2 * time.Second,
	IdleTimeout:       600 * time.Millisecond,
}

// patience is how long a test waits for the server to close a connection
// before it calls the connection held open for good.
const patience = 20 * time.Second

// startServer runs the webhook's HTTP server (as Serve builds it, without
// TLS) on a loopback port and returns its address.
func startServer(t *testing.T, l webhook.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Mux(webhook.NewHandler(webhook.DefaultConfig())), l, nil)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// dribble writes b one byte at a time, every 50 ms, until stop is closed or a
// write fails (the server closed the connection).
func dribble(conn net.Conn, b byte, stop <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if _, err := conn.Write([]byte{b}); err != nil {
				return
			}
		}
	}
}

// waitClosed reads until the server closes conn and returns what it sent;
// it fails the test when the connection is still open after patience.
func waitClosed(t *testing.T, conn net.Conn) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	got, err := io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server still holds the connection open after %s (sent %q)", patience, got)
	}
	return string(got) // err is nil (EOF) or a reset: either way closed
}

func TestServerClosesDribbledBody(t *testing.T) {
	conn, err := net.Dial("tcp", startServer(t, testLimits))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /mutate-pod HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{")
	stop := make(chan struct{})
	defer close(stop)
	go dribble(conn, ' ', stop)
	got := waitClosed(t, conn)
	if got != "" && !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("answer to a body that never arrives: %q, want 400 or nothing", got)
	}
}

func TestServerClosesDribbledHeaders(t *testing.T) {
	conn, err := net.Dial("tcp", startServer(t, testLimits))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /mutate-pod HTTP/1.1\r\nHost: webhook\r\nX-Slow: ")
	stop := make(chan struct{})
	defer close(stop)
	go dribble(conn, 'a', stop)
	waitClosed(t, conn)
}

func TestServerClosesIdleConnection(t *testing.T) {
	conn, err := net.Dial("tcp", startServer(t, testLimits))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("/healthz: %d, close %v; want 200 kept alive", resp.StatusCode, resp.Close)
	}
	// Then send nothing: the kept-alive connection is closed.
	if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an idle connection is still open after %s", patience)
	}
}

func TestServerRejectsOversizedRequests(t *testing.T) {
	addr := startServer(t, webhook.Limits{})
	for _, tc := range []struct {
		name, head string
		code       int
	}{
		{"body announced over the limit", fmt.Sprintf("POST /mutate-pod HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", webhook.MaxReviewBytes+1),
			http.StatusRequestEntityTooLarge},
		{"headers over the limit", "POST /mutate-pod HTTP/1.1\r\nHost: webhook\r\nX-Big: " + strings.Repeat("a", 128<<10) + "\r\n\r\n",
			http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() { _, _ = io.WriteString(conn, tc.head) }()
			_ = conn.SetReadDeadline(time.Now().Add(patience))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
}

func TestDefaultLimitsBoundEverything(t *testing.T) {
	srv := webhook.NewServer(http.NotFoundHandler(), webhook.Limits{}, nil)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("server limits %v %v %v %v %d: every one must be set", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	// The API server waits at most 30 s for a webhook; a request must be
	// read well within that.
	if srv.ReadTimeout > 15*time.Second || srv.ReadHeaderTimeout > srv.ReadTimeout {
		t.Errorf("read timeouts %v / %v do not fit a 30 s webhook call", srv.ReadHeaderTimeout, srv.ReadTimeout)
	}
}
