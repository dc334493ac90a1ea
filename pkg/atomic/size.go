package atomic

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ParseSize parses a Kubernetes quantity such as "16Ki", "64Ki", "1Mi" or
// "16384" into bytes. Decimal suffixes ("16k" = 16000) and exponents
// ("1e6") are valid quantities and parse, though sizes that must be powers of
// two are then rejected by the planner. Rejected here, wrapping
// ErrInvalidSize: the empty string, anything that is not a quantity, zero,
// negative values, values that are not a whole number of bytes ("100m",
// "0.5") and values of 2^63-1 (8Ei) or more.
func ParseSize(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty size (use a quantity such as 16Ki)", ErrInvalidSize)
	}
	q, err := ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a quantity (use e.g. 16Ki, 64Ki or 16384): %v", ErrInvalidSize, s, err)
	}
	if q.Sign() <= 0 {
		return 0, fmt.Errorf("%w: %q must be positive", ErrInvalidSize, s)
	}
	// ParseQuantity clamps overflowing binary quantities to 2^63-1.
	if q.Cmp(*resource.NewQuantity(math.MaxInt64, resource.DecimalSI)) >= 0 {
		return 0, fmt.Errorf("%w: %q is too large", ErrInvalidSize, s)
	}
	// Value rounds up; it is exact only for a whole number of bytes.
	v := q.Value()
	if q.Cmp(*resource.NewQuantity(v, resource.DecimalSI)) != 0 {
		return 0, fmt.Errorf("%w: %q is not a whole number of bytes", ErrInvalidSize, s)
	}
	return uint64(v), nil
}

// MaxQuantityLen and MaxQuantityExponent bound what ParseQuantity hands to
// resource.ParseQuantity: a size never needs more, and an exponent such as
// "1e-2147483647" or "9E72036854775807" makes that parser or the
// arithmetic on its result run for minutes (a denial of service through a
// StorageClass parameter or a pod annotation).
const (
	MaxQuantityLen      = 64
	MaxQuantityExponent = 64
)

// ParseQuantity is resource.ParseQuantity for untrusted input: it first
// refuses strings longer than MaxQuantityLen and decimal exponents ("e" or
// "E" followed by a number) beyond ±MaxQuantityExponent.
func ParseQuantity(s string) (resource.Quantity, error) {
	if len(s) > MaxQuantityLen {
		return resource.Quantity{}, fmt.Errorf("longer than %d characters", MaxQuantityLen)
	}
	num := strings.TrimLeft(s, "+-")
	num = strings.TrimLeft(num, "0123456789.")
	// "Ei" is the binary suffix exbi; "e" or "E" and a signed number an exponent
	if len(num) > 1 && (num[0] == 'e' || num[0] == 'E') && num[1:] != "i" {
		exp, err := strconv.Atoi(num[1:])
		if err != nil || exp < -MaxQuantityExponent || exp > MaxQuantityExponent {
			return resource.Quantity{}, fmt.Errorf("exponent %q out of range (at most ±%d)", num[1:], MaxQuantityExponent)
		}
	}
	return resource.ParseQuantity(s)
}

// FormatSize renders a byte count the way ParseSize reads it: the largest
// exact binary suffix ("16Ki", "1Mi"), else plain bytes.
func FormatSize(n uint64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	i := 0
	for n != 0 && n%1024 == 0 && i < len(suffixes)-1 {
		n /= 1024
		i++
	}
	return strconv.FormatUint(n, 10) + suffixes[i]
}

// isPowerOfTwo reports whether n is a power of two (n > 0).
func isPowerOfTwo(n uint64) bool { return n != 0 && n&(n-1) == 0 }

// floorPowerOfTwo returns the largest power of two <= n (0 for 0).
func floorPowerOfTwo(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	return 1 << (bits.Len64(n) - 1)
}

// ParseFSType validates a filesystem name: "ext4" or "xfs". Callers apply
// their defaults first; "" is rejected.
func ParseFSType(s string) (FSType, error) {
	switch FSType(s) {
	case FSExt4, FSXFS:
		return FSType(s), nil
	}
	if s == "" {
		return "", fmt.Errorf("%w: empty (accepted: ext4, xfs)", ErrInvalidFSType)
	}
	if l := strings.ToLower(s); l == string(FSExt4) || l == string(FSXFS) {
		return "", fmt.Errorf("%w: %q (accepted: ext4, xfs; lower case)", ErrInvalidFSType, s)
	}
	return "", fmt.Errorf("%w: %q (accepted: ext4, xfs)", ErrInvalidFSType, s)
}

// ParsePolicy validates an atomic policy: "require" or "prefer". Callers
// apply their defaults first; "" is rejected.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case PolicyRequire, PolicyPrefer:
		return Policy(s), nil
	}
	if s == "" {
		return "", fmt.Errorf("%w: empty (accepted: require, prefer)", ErrInvalidPolicy)
	}
	return "", fmt.Errorf("%w: %q (accepted: require, prefer)", ErrInvalidPolicy, s)
}
