package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// StorageClass parameters and volume context keys.
const (
	ParamFSType          = "fsType"
	ParamAtomicWriteUnit = "atomicWriteUnit"
	ParamClusterSize     = "clusterSize"
	ParamAtomicPolicy    = "atomicPolicy"
	// ParamAtomicSource is where atomic writes may come from: "any" (the
	// default; XFS falls back to software atomic writes) or "hardware".
	ParamAtomicSource = "atomicSource"

	// sidecarPrefix marks parameters the external sidecars add; they are
	// accepted and not stored.
	sidecarPrefix = "csi.storage.k8s.io/"

	// Inline ephemeral volumes (the shim).
	contextEphemeral = "csi.storage.k8s.io/ephemeral"
	contextType      = "type"
	typeShim         = "shim"

	defaultFSType = untorn.FSExt4
	defaultUnit   = 16 << 10
	defaultPolicy = untorn.PolicyRequire

	minUnit    = 4 << 10
	maxUnit    = 1 << 20
	minCluster = 4 << 10
	maxCluster = 64 << 20
)

// ValidateCreateParameters checks StorageClass parameters and returns the
// normalised volume context: fsType, atomicWriteUnit and clusterSize in
// bytes, atomicPolicy, with defaults applied. Parameters under
// csi.storage.k8s.io/ are accepted and dropped; any other unknown parameter
// is an error. Every error wraps ErrInvalidParameter and names the parameter
// and what it accepts.
func ValidateCreateParameters(params map[string]string) (map[string]string, error) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy, ParamAtomicSource:
		default:
			if !strings.HasPrefix(k, sidecarPrefix) {
				return nil, fmt.Errorf("%w: unknown parameter %q; accepted: %s, %s, %s, %s, %s",
					ErrInvalidParameter, k, ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy, ParamAtomicSource)
			}
		}
	}

	fsType := defaultFSType
	if v, ok := params[ParamFSType]; ok {
		t, err := untorn.ParseFSType(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w; accepted: ext4, xfs", ErrInvalidParameter, ParamFSType, v, err)
		}
		fsType = t
	}

	unit := uint64(defaultUnit)
	if v, ok := params[ParamAtomicWriteUnit]; ok {
		u, err := parsePow2(v, minUnit, maxUnit)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w; accepted: a power of two from 4Ki to 1Mi, e.g. 8Ki or 16Ki",
				ErrInvalidParameter, ParamAtomicWriteUnit, v, err)
		}
		unit = u
	}

	var cluster uint64
	if v, ok := params[ParamClusterSize]; ok {
		if fsType != untorn.FSExt4 {
			return nil, fmt.Errorf("%w: %s applies only to fsType ext4 (bigalloc), not %s",
				ErrInvalidParameter, ParamClusterSize, fsType)
		}
		c, err := parsePow2(v, minCluster, maxCluster)
		if err == nil && c < unit {
			err = fmt.Errorf("%w: smaller than %s %d", untorn.ErrClusterOutOfRange, ParamAtomicWriteUnit, unit)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w; accepted: a power of two from 4Ki to 64Mi, at least atomicWriteUnit",
				ErrInvalidParameter, ParamClusterSize, v, err)
		}
		cluster = c
	}

	policy := defaultPolicy
	if v, ok := params[ParamAtomicPolicy]; ok {
		p, err := untorn.ParsePolicy(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w; accepted: require, prefer", ErrInvalidParameter, ParamAtomicPolicy, v, err)
		}
		policy = p
	}

	source := untorn.SourceAny
	if v, ok := params[ParamAtomicSource]; ok {
		s, err := untorn.ParseSource(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w; accepted: any, hardware", ErrInvalidParameter, ParamAtomicSource, v, err)
		}
		source = s
	}

	out := map[string]string{
		ParamFSType:          string(fsType),
		ParamAtomicWriteUnit: strconv.FormatUint(unit, 10),
		ParamAtomicPolicy:    string(policy),
	}
	if cluster != 0 {
		out[ParamClusterSize] = strconv.FormatUint(cluster, 10)
	}
	// "any" is the default and stays out of the context, so volumes made
	// before the parameter existed compare equal to a repeated request.
	if source == untorn.SourceHardware {
		out[ParamAtomicSource] = string(source)
	}
	return out, nil
}

func parsePow2(v string, lo, hi uint64) (uint64, error) {
	n, err := untorn.ParseSize(v)
	if err != nil {
		return 0, err
	}
	if n == 0 || n&(n-1) != 0 {
		return 0, fmt.Errorf("%w: %d", untorn.ErrNotPowerOfTwo, n)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%w: %d not in [%d, %d]", untorn.ErrClusterOutOfRange, n, lo, hi)
	}
	return n, nil
}

// volumeSpec is a volume context parsed back into typed values.
type volumeSpec struct {
	FSType  untorn.FSType
	Unit    uint64
	Cluster uint64
	Policy  untorn.Policy
	Source  untorn.Source // "" for the default, any
}

// volumeParams are the volume context keys ValidateCreateParameters
// produces, stored with a volume and compared on a repeated request.
var volumeParams = []string{ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy, ParamAtomicSource}

// planRequest is what staging and placement ask the planner for.
func (s volumeSpec) planRequest() untorn.PlanRequest {
	return untorn.PlanRequest{FSType: s.FSType, Unit: s.Unit, Cluster: s.Cluster, Policy: s.Policy, Source: s.Source}
}

// parseVolumeContext reads a context produced by ValidateCreateParameters.
func parseVolumeContext(ctx map[string]string) (volumeSpec, error) {
	params := map[string]string{}
	for _, k := range volumeParams {
		if v, ok := ctx[k]; ok {
			params[k] = v
		}
	}
	norm, err := ValidateCreateParameters(params)
	if err != nil {
		return volumeSpec{}, err
	}
	unit, _ := strconv.ParseUint(norm[ParamAtomicWriteUnit], 10, 64)
	cluster, _ := strconv.ParseUint(norm[ParamClusterSize], 10, 64)
	spec := volumeSpec{
		FSType:  untorn.FSType(norm[ParamFSType]),
		Unit:    unit,
		Cluster: cluster,
		Policy:  untorn.Policy(norm[ParamAtomicPolicy]),
	}
	if norm[ParamAtomicSource] == string(untorn.SourceHardware) {
		spec.Source = untorn.SourceHardware
	}
	return spec, nil
}

// Volume IDs are "uv-" and 32 lower-case hex digits derived from the
// volume name, so a repeated CreateVolume lands on the same ID.
var volumeIDRE = regexp.MustCompile(`^uv-[0-9a-f]{32}$`)

func volumeIDForName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "uv-" + hex.EncodeToString(sum[:16])
}

// validVolumeID reports whether id is one this driver hands out. Nothing
// that fails this check is ever used in a path.
func validVolumeID(id string) bool { return volumeIDRE.MatchString(id) }

// safeTokenRE accepts IDs from elsewhere (kubelet's inline ephemeral
// volume IDs) that are only logged and used as map keys.
var safeTokenRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validToken(id string) bool { return safeTokenRE.MatchString(id) && !strings.Contains(id, "..") }

// checkPath validates a path the CO gave us: absolute, clean, no NUL.
func checkPath(field, p string) error {
	if p == "" {
		return fmt.Errorf("%w: %s is required", ErrInvalidArgument, field)
	}
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) || len(p) > 4096 {
		return fmt.Errorf("%w: %s %q must be an absolute path", ErrInvalidArgument, field, p)
	}
	return nil
}

// supportedAccessMode reports whether the driver serves mode.
func supportedAccessMode(m csi.VolumeCapability_AccessMode_Mode) bool {
	switch m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		return true
	}
	return false
}

// checkCapability validates one capability; fsType is the volume's
// filesystem ("" when not known yet).
func checkCapability(c *csi.VolumeCapability, fsType string) error {
	if c == nil {
		return fmt.Errorf("%w: volume capability is empty", ErrInvalidArgument)
	}
	if c.GetAccessMode() == nil {
		return fmt.Errorf("%w: volume capability has no access mode", ErrInvalidArgument)
	}
	if m := c.GetAccessMode().GetMode(); !supportedAccessMode(m) {
		return fmt.Errorf("%w: access mode %s is not supported; accepted: SINGLE_NODE_WRITER, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER, SINGLE_NODE_READER_ONLY",
			ErrInvalidArgument, m)
	}
	switch {
	case c.GetBlock() != nil:
	case c.GetMount() != nil:
		fs := c.GetMount().GetFsType()
		if fs != "" && fs != string(untorn.FSExt4) && fs != string(untorn.FSXFS) {
			return fmt.Errorf("%w: capability fsType %q is not supported; accepted: ext4, xfs", ErrInvalidArgument, fs)
		}
		if fs != "" && fsType != "" && fs != fsType {
			return fmt.Errorf("%w: capability fsType %q differs from the volume's fsType %q", ErrInvalidArgument, fs, fsType)
		}
		for _, f := range c.GetMount().GetMountFlags() {
			if f == "" || strings.ContainsAny(f, ",\x00") {
				return fmt.Errorf("%w: mount flag %q is not a single option", ErrInvalidArgument, f)
			}
		}
	default:
		return fmt.Errorf("%w: volume capability needs an access type (mount or block)", ErrInvalidArgument)
	}
	return nil
}

func checkCapabilities(caps []*csi.VolumeCapability, fsType string) error {
	if len(caps) == 0 {
		return fmt.Errorf("%w: volume capabilities are required", ErrInvalidArgument)
	}
	for _, c := range caps {
		if err := checkCapability(c, fsType); err != nil {
			return err
		}
	}
	return nil
}
