package atomic

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		err  error
	}{
		{"16Ki", 16384, nil},
		{"64Ki", 65536, nil},
		{"16384", 16384, nil},
		{"1Mi", 1 << 20, nil},
		{"4Gi", 4 << 30, nil},
		{"8Ei", 0, ErrInvalidSize}, // 2^63 does not fit
		{"7Ei", 7 << 60, nil},
		{"16k", 16000, nil}, // a decimal quantity; the planner rejects it as a unit
		{"1e3", 1000, nil},
		{"1.5Ki", 1536, nil},
		{"+4Ki", 4096, nil},
		{"", 0, ErrInvalidSize},
		{"0", 0, ErrInvalidSize},
		{"0Ki", 0, ErrInvalidSize},
		{"-4Ki", 0, ErrInvalidSize},
		{"100m", 0, ErrInvalidSize},
		{"0.5", 0, ErrInvalidSize},
		{"1.1Ki", 0, ErrInvalidSize}, // 1126.4 bytes
		{"16KiB", 0, ErrInvalidSize},
		{"16K", 0, ErrInvalidSize},
		{"16 Ki", 0, ErrInvalidSize},
		{" 16Ki", 0, ErrInvalidSize},
		{"Ki", 0, ErrInvalidSize},
		{"sixteen", 0, ErrInvalidSize},
		{"99999999999999999999", 0, ErrInvalidSize},
		// exponents a parser would spend minutes on (a fuzzer found the first)
		{"9223E72036854775807", 0, ErrInvalidSize},
		{"1e-2147483647", 0, ErrInvalidSize},
		{"1e2147483647", 0, ErrInvalidSize},
		{"1E65", 0, ErrInvalidSize},
		{"1e-65", 0, ErrInvalidSize},
		{"1e18", 1000000000000000000, nil},
		{"5E", 5000000000000000000, nil}, // E alone is exa, not an exponent
		{"1e64", 0, ErrInvalidSize},      // too large, refused after parsing
		{"16384" + strings.Repeat("0", 60), 0, ErrInvalidSize},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("ParseSize(%q) = %d, %v; want %v", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0"}, {512, "512"}, {4096, "4Ki"}, {16384, "16Ki"}, {1 << 20, "1Mi"}, {1536, "1536"},
		{3 << 30, "3Gi"}, {1 << 62, "4Ei"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseNames(t *testing.T) {
	fsTests := []struct {
		in   string
		want FSType
		err  error
	}{
		{"ext4", FSExt4, nil}, {"xfs", FSXFS, nil},
		{"", "", ErrInvalidFSType}, {"XFS", "", ErrInvalidFSType}, {"ext3", "", ErrInvalidFSType}, {"btrfs", "", ErrInvalidFSType},
	}
	for _, tt := range fsTests {
		got, err := ParseFSType(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("ParseFSType(%q) = %q, %v", tt.in, got, err)
		}
	}
	polTests := []struct {
		in   string
		want Policy
		err  error
	}{
		{"require", PolicyRequire, nil}, {"prefer", PolicyPrefer, nil},
		{"", "", ErrInvalidPolicy}, {"Require", "", ErrInvalidPolicy}, {"best-effort", "", ErrInvalidPolicy},
	}
	for _, tt := range polTests {
		got, err := ParsePolicy(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("ParsePolicy(%q) = %q, %v", tt.in, got, err)
		}
	}
}

// FuzzParseSize checks that ParseSize never panics, that every error wraps
// ErrInvalidSize, and that every accepted size is the quantity's exact
// positive integer value and survives FormatSize.
// TestParseQuantityBounds: the guard refuses what would make the
// quantity parser or arithmetic on its result run away, within a bounded
// time, and lets every ordinary quantity through.
func TestParseQuantityBounds(t *testing.T) {
	for _, s := range []string{"9223E72036854775807", "1e-2147483647", "-1E+2147483647", "1e65", "1E-65",
		"1e" + strings.Repeat("9", 40), strings.Repeat("1", MaxQuantityLen+1)} {
		done := make(chan error, 1)
		go func() { _, err := ParseQuantity(s); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("ParseQuantity(%q) accepted", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ParseQuantity(%q) still running after 10 s", s)
		}
	}
	for _, s := range []string{"16Ki", "1e64", "1E-64", "5E", "2e3", "0.5", "-4Ki", "+1e3", strings.Repeat("1", MaxQuantityLen)} {
		if _, err := ParseQuantity(s); err != nil {
			t.Errorf("ParseQuantity(%q): %v", s, err)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"16Ki", "64Ki", "16384", "1Mi", "16k", "1e3", "1.5Ki", "-4Ki", "100m", "", "8Ei", "0x10", "1e-2147483647"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSize) {
				t.Fatalf("ParseSize(%q): error %v does not wrap ErrInvalidSize", s, err)
			}
			return
		}
		if n == 0 || n >= 1<<63-1 {
			t.Fatalf("ParseSize(%q) = %d, out of range", s, n)
		}
		q, qerr := resource.ParseQuantity(s)
		if qerr != nil {
			t.Fatalf("ParseSize(%q) accepted what ParseQuantity rejects: %v", s, qerr)
		}
		if v := q.Value(); uint64(v) != n || q.Cmp(*resource.NewQuantity(v, resource.BinarySI)) != 0 {
			t.Fatalf("ParseSize(%q) = %d, quantity says %s", s, n, q.String())
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), back, err)
		}
	})
}
