package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// CertReloader serves a TLS key pair from files and picks up a rotated pair
// (a renewed cert-manager Secret, or a new chart-generated one projected by
// the kubelet) on the next handshake after the files change, without a
// restart.
type CertReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	lastErr error
}

// NewCertReloader loads the pair once and fails when it is unusable.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile}
	if _, err := r.GetCertificate(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate implements tls.Config.GetCertificate. When a changed pair
// cannot be loaded (half-written during a rotation) it keeps serving the
// previous one.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	stamp, err := r.fileStamp()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && stamp != r.stamp {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(r.certFile, r.keyFile); err == nil {
			r.cert, r.stamp = &c, stamp
			klog.InfoS("loaded webhook certificate", "certFile", r.certFile)
		}
	}
	if err != nil && (r.lastErr == nil || r.lastErr.Error() != err.Error()) {
		klog.ErrorS(err, "loading webhook certificate", "certFile", r.certFile)
	}
	r.lastErr = err
	if r.cert == nil {
		return nil, fmt.Errorf("no usable webhook certificate: %w", err)
	}
	return r.cert, nil
}

func (r *CertReloader) fileStamp() (string, error) {
	stamp := ""
	for _, p := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// ServerOptions configure Serve.
type ServerOptions struct {
	Address  string // e.g. ":9443"
	CertFile string
	KeyFile  string
	Config   Config
	// Limits bound each connection; zero fields take DefaultLimits.
	Limits Limits
}

// Limits bound what one client can hold of the server. Without them a
// client that sends headers and then a body one byte at a time keeps a
// connection (and a handler) busy for as long as it likes; enough of those
// and the API server's own calls time out, which with failurePolicy Ignore
// would admit opted-in pods without the shim.
type Limits struct {
	// ReadHeaderTimeout bounds the TLS handshake and the request headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the headers to the end
	// of the response.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends nothing.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
}

// DefaultLimits fit the API server's webhook calls: at most 30 s
// (timeoutSeconds), a few KiB of headers and a body of at most
// MaxReviewBytes, which the handler enforces.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      20 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// NewServer returns the HTTP server for handler with every limit set (zero
// fields of l take DefaultLimits). tlsConfig may be nil for plain HTTP.
func NewServer(handler http.Handler, l Limits, tlsConfig *tls.Config) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		TLSConfig:         tlsConfig,
	}
}

// Mux returns the HTTP routes: /mutate-pod and /healthz.
func Mux(h *Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/mutate-pod", h)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

// Serve runs the HTTPS webhook server until ctx is done.
func Serve(ctx context.Context, opts ServerOptions) error {
	reloader, err := NewCertReloader(opts.CertFile, opts.KeyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return err
	}
	srv := NewServer(Mux(NewHandler(opts.Config)), opts.Limits,
		&tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: reloader.GetCertificate})
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("serving admission webhook", "address", ln.Addr().String())
	err = srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}
