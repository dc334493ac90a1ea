package driver

import (
	"errors"
	"reflect"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// FuzzValidateCreateParameters feeds arbitrary StorageClass parameters to
// ValidateCreateParameters and specOf. Invariants: no panic;
// every error wraps ErrInvalidParameter and maps to InvalidArgument; an
// accepted set normalises to a context that validates again to itself and
// parses back to the same values; an accepted unit (and cluster) is a power
// of two within the documented bounds; clusterSize only with ext4 and at
// least the unit.
func FuzzValidateCreateParameters(f *testing.F) {
	type seed struct {
		fsType, unit, cluster, policy, extraKey, extraValue string
		mask                                                uint8
	}
	for _, s := range []seed{
		{"ext4", "16Ki", "64Ki", "require", "", "", 0b1111},
		{"xfs", "8Ki", "", "prefer", "", "", 0b1011},
		{"xfs", "1Mi", "64Ki", "prefer", "", "", 0b1111},
		{"ext4", "4096", "4096", "require", "csi.storage.k8s.io/pvc/name", "db", 0b11111},
		{"EXT4", "16k", "1e6", "Require", "blockSize", "4096", 0b11111},
		{"", "0", "-1", "", "", "", 0b1111},
		{"ext4", "2Mi", "128Mi", "require", "", "", 0b0111},
		{"ext4", "16Ki", "8Ki", "require", "", "", 0b0111},
		{"ext4", "0.5Ki", "100m", "require", "", "", 0b0111},
		{"ext4", "8Ei", "9223372036854775807", "require", "", "", 0b0111},
	} {
		f.Add(s.fsType, s.unit, s.cluster, s.policy, s.extraKey, s.extraValue, s.mask)
	}
	f.Fuzz(func(t *testing.T, fsType, unit, cluster, policy, extraKey, extraValue string, mask uint8) {
		params := map[string]string{}
		for i, kv := range [][2]string{{ParamFSType, fsType}, {ParamAtomicWriteUnit, unit},
			{ParamClusterSize, cluster}, {ParamAtomicPolicy, policy}, {extraKey, extraValue}} {
			if mask&(1<<i) != 0 {
				params[kv[0]] = kv[1]
			}
		}
		out, err := ValidateCreateParameters(params)
		if err != nil {
			if !errors.Is(err, ErrInvalidParameter) || codeOf(err) != codes.InvalidArgument {
				t.Fatalf("params %q: error %v (code %s) does not wrap ErrInvalidParameter", params, err, codeOf(err))
			}
			if out != nil {
				t.Fatalf("params %q: error %v with a context %q", params, err, out)
			}
			if _, perr := specOf(params); perr == nil && !hasForeignKey(params) {
				t.Fatalf("params %q: specOf accepts what ValidateCreateParameters rejects (%v)", params, err)
			}
			return
		}
		checkNormalised(t, params, out)
		again, err := ValidateCreateParameters(out)
		if err != nil || !reflect.DeepEqual(again, out) {
			t.Fatalf("params %q: context %q validates to %q, %v", params, out, again, err)
		}
		spec, err := specOf(out)
		if err != nil {
			t.Fatalf("params %q: specOf(%q): %v", params, out, err)
		}
		want := volumeSpec{FSType: untorn.FSType(out[ParamFSType]), Policy: untorn.Policy(out[ParamAtomicPolicy])}
		want.Unit, _ = strconv.ParseUint(out[ParamAtomicWriteUnit], 10, 64)
		want.Cluster, _ = strconv.ParseUint(out[ParamClusterSize], 10, 64)
		if spec != want {
			t.Fatalf("params %q: parsed %+v, want %+v", params, spec, want)
		}
		// The raw parameters parse to the same spec (sidecar keys aside).
		if raw, err := specOf(params); err != nil || raw != spec {
			t.Fatalf("params %q: specOf = %+v, %v; want %+v", params, raw, err, spec)
		}
	})
}

// hasForeignKey reports whether params hold a key specOf does
// not read (it ignores them; ValidateCreateParameters rejects unknown ones).
func hasForeignKey(params map[string]string) bool {
	for k := range params {
		switch k {
		case ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy:
		default:
			return true
		}
	}
	return false
}

// checkNormalised checks one accepted context: exactly the known keys,
// canonical values, units within bounds.
func checkNormalised(t *testing.T, params, out map[string]string) {
	t.Helper()
	for k := range out {
		switch k {
		case ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy:
		default:
			t.Fatalf("params %q: context has key %q", params, k)
		}
	}
	fs := untorn.FSType(out[ParamFSType])
	if fs != untorn.FSExt4 && fs != untorn.FSXFS {
		t.Fatalf("params %q: fsType %q", params, fs)
	}
	if p := untorn.Policy(out[ParamAtomicPolicy]); p != untorn.PolicyRequire && p != untorn.PolicyPrefer {
		t.Fatalf("params %q: atomicPolicy %q", params, p)
	}
	u, err := strconv.ParseUint(out[ParamAtomicWriteUnit], 10, 64)
	if err != nil || u&(u-1) != 0 || u < minUnit || u > maxUnit {
		t.Fatalf("params %q: atomicWriteUnit %q is not a power of two in [%d, %d]", params, out[ParamAtomicWriteUnit], minUnit, maxUnit)
	}
	if _, ok := params[ParamAtomicWriteUnit]; !ok && u != defaultUnit {
		t.Fatalf("params %q: default unit %d, want %d", params, u, defaultUnit)
	}
	c, ok := out[ParamClusterSize]
	if _, given := params[ParamClusterSize]; ok != given {
		t.Fatalf("params %q: clusterSize given %v, in context %v", params, given, ok)
	}
	if !ok {
		return
	}
	n, err := strconv.ParseUint(c, 10, 64)
	if err != nil || n&(n-1) != 0 || n < minCluster || n > maxCluster || n < u || fs != untorn.FSExt4 {
		t.Fatalf("params %q: clusterSize %q with unit %d on %s", params, c, u, fs)
	}
}
