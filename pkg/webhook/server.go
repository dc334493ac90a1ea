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
	srv := &http.Server{
		Handler:           Mux(NewHandler(opts.Config)),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: reloader.GetCertificate},
	}
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
