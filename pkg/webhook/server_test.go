package webhook_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/untorn/untorn/pkg/webhook"
)

// writePair writes a self-signed serving pair with the given serial and
// stamps both files with mtime, as a rotation by the kubelet would change it.
func writePair(t *testing.T, dir string, serial int64, mtime time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "untorn-webhook.untorn.svc"},
		DNSNames:     []string{"untorn-webhook.untorn.svc", "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), mtime)
	write(t, filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), mtime)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func write(t *testing.T, path string, data []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// servedSerial makes a real TLS handshake with a client trusting ca and
// returns the serial number of the certificate the server presented.
func servedSerial(t *testing.T, url string, ca *x509.Certificate) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "untorn-webhook.untorn.svc"}}}
	resp, err := client.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

func TestCertReloaderRotation(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	base := time.Now().Add(-time.Minute)
	first := writePair(t, dir, 1, base)

	r, err := webhook.NewCertReloader(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(webhook.Mux(webhook.NewHandler(webhook.DefaultConfig())))
	srv.TLS = &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	if got := servedSerial(t, srv.URL, first); got != 1 {
		t.Fatalf("served serial %d, want 1", got)
	}
	second := writePair(t, dir, 2, base.Add(time.Second))
	srv.CloseClientConnections()
	if got := servedSerial(t, srv.URL, second); got != 2 {
		t.Fatalf("after rotation served serial %d, want 2", got)
	}
	// A half-written rotation keeps the last good pair in service.
	write(t, crt, []byte("not a certificate"), base.Add(2*time.Second))
	srv.CloseClientConnections()
	if got := servedSerial(t, srv.URL, second); got != 2 {
		t.Fatalf("after a broken rotation served serial %d, want 2", got)
	}
}

func TestNewCertReloaderRejectsMissingPair(t *testing.T) {
	dir := t.TempDir()
	if _, err := webhook.NewCertReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err == nil {
		t.Fatal("NewCertReloader accepted missing files")
	}
}
