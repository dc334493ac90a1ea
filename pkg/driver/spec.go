package driver

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

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

	defaultFSType = untorn.FSExt4
	defaultUnit   = 16 << 10
	defaultPolicy = untorn.PolicyRequire

	// The unit's lower bound and power-of-two rule are the planner's
	// (untorn.CheckUnit); the driver adds the upper bounds.
	minUnit    = untorn.BlockSize
	maxUnit    = 1 << 20
	minCluster = 4 << 10
	maxCluster = 64 << 20
)

// volumeParams are the volume context keys a volumeSpec is stored under,
// with the volume and in its CSI volume context.
var volumeParams = []string{ParamFSType, ParamAtomicWriteUnit, ParamClusterSize, ParamAtomicPolicy, ParamAtomicSource}

// volumeSpec is a volume's class: what its StorageClass asked for, parsed
// and validated once by parseSpec. CreateVolume stores it with the volume
// as strings (context); every later call reads it back with specOf, and
// placement and staging hand its planRequest to the planner.
type volumeSpec struct {
	FSType  untorn.FSType
	Unit    uint64
	Cluster uint64 // ext4 bigalloc cluster override; 0: the planner chooses
	Policy  untorn.Policy
	Source  untorn.Source // "" for the default, any
}

// ValidateCreateParameters checks StorageClass parameters and returns the
// normalised volume context: fsType, atomicWriteUnit and clusterSize in
// bytes, atomicPolicy, with defaults applied. Parameters under
// csi.storage.k8s.io/ are accepted and dropped; any other unknown parameter
// is an error. Every error wraps ErrInvalidParameter and names the parameter
// and what it accepts.
func ValidateCreateParameters(params map[string]string) (map[string]string, error) {
	s, err := parseSpec(params)
	if err != nil {
		return nil, err
	}
	return s.context(), nil
}

// parseSpec is the one parser of a volume's class, from StorageClass
// parameters or from a stored volume context (see ValidateCreateParameters).
func parseSpec(params map[string]string) (volumeSpec, error) {
	if err := checkParamNames(params); err != nil {
		return volumeSpec{}, err
	}
	s := volumeSpec{FSType: defaultFSType, Unit: defaultUnit, Policy: defaultPolicy}
	var err error
	if v, ok := params[ParamFSType]; ok {
		if s.FSType, err = untorn.ParseFSType(v); err != nil {
			return volumeSpec{}, paramError(ParamFSType, v, err, "ext4, xfs")
		}
	}
	if v, ok := params[ParamAtomicWriteUnit]; ok {
		if s.Unit, err = parseUnit(s.FSType, v); err != nil {
			return volumeSpec{}, paramError(ParamAtomicWriteUnit, v, err, "a power of two from 4Ki to 1Mi, e.g. 8Ki or 16Ki")
		}
	}
	if v, ok := params[ParamClusterSize]; ok {
		if s.Cluster, err = parseCluster(s.FSType, s.Unit, v); err != nil {
			return volumeSpec{}, paramError(ParamClusterSize, v, err, "a power of two from 4Ki to 64Mi, at least atomicWriteUnit")
		}
	}
	if v, ok := params[ParamAtomicPolicy]; ok {
		if s.Policy, err = untorn.ParsePolicy(v); err != nil {
			return volumeSpec{}, paramError(ParamAtomicPolicy, v, err, "require, prefer")
		}
	}
	if v, ok := params[ParamAtomicSource]; ok {
		src, err := untorn.ParseSource(v)
		if err != nil {
			return volumeSpec{}, paramError(ParamAtomicSource, v, err, "any, hardware")
		}
		if src == untorn.SourceHardware {
			s.Source = src
		}
	}
	return s, nil
}

// checkParamNames refuses parameters the driver does not know, except the
// sidecars' csi.storage.k8s.io/ ones.
func checkParamNames(params map[string]string) error {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		known := false
		for _, p := range volumeParams {
			known = known || k == p
		}
		if !known && !strings.HasPrefix(k, sidecarPrefix) {
			return fmt.Errorf("%w: unknown parameter %q; accepted: %s", ErrInvalidParameter, k, strings.Join(volumeParams, ", "))
		}
	}
	return nil
}

func paramError(name, value string, err error, accepted string) error {
	return fmt.Errorf("%w: %s %q: %w; accepted: %s", ErrInvalidParameter, name, value, err, accepted)
}

// parseUnit reads an atomic write unit: the planner's rules, and at most
// maxUnit (the largest unit the node's topology names).
func parseUnit(fs untorn.FSType, v string) (uint64, error) {
	u, err := untorn.ParseSize(v)
	if err != nil {
		return 0, err
	}
	if err := untorn.CheckUnit(fs, u); err != nil {
		return 0, err
	}
	if u > maxUnit {
		return 0, fmt.Errorf("%w: %d not in [%d, %d]", untorn.ErrUnitTooLarge, u, minUnit, maxUnit)
	}
	return u, nil
}

// parseCluster reads an ext4 bigalloc cluster size: the planner's rules
// (ext4 only, a power of two, at least the unit), within [minCluster,
// maxCluster].
func parseCluster(fs untorn.FSType, unit uint64, v string) (uint64, error) {
	c, err := untorn.ParseSize(v)
	if err != nil {
		return 0, err
	}
	if err := untorn.CheckCluster(fs, unit, c); err != nil {
		return 0, err
	}
	if c < minCluster || c > maxCluster {
		return 0, fmt.Errorf("%w: %d not in [%d, %d]", untorn.ErrClusterOutOfRange, c, minCluster, maxCluster)
	}
	return c, nil
}

// context is the one rendering of a spec as strings: the volume context
// CreateVolume returns and the metadata stored with the volume.
func (s volumeSpec) context() map[string]string {
	out := map[string]string{
		ParamFSType:          string(s.FSType),
		ParamAtomicWriteUnit: strconv.FormatUint(s.Unit, 10),
		ParamAtomicPolicy:    string(s.Policy),
	}
	if s.Cluster != 0 {
		out[ParamClusterSize] = strconv.FormatUint(s.Cluster, 10)
	}
	// "any" is the default and stays out of the context, so volumes made
	// before the parameter existed compare equal to a repeated request.
	if s.Source == untorn.SourceHardware {
		out[ParamAtomicSource] = string(s.Source)
	}
	return out
}

// specOf reads a spec back from a volume's context or metadata (other
// keys, such as the verified limits, are ignored).
func specOf(meta map[string]string) (volumeSpec, error) {
	params := map[string]string{}
	for _, k := range volumeParams {
		if v, ok := meta[k]; ok {
			params[k] = v
		}
	}
	return parseSpec(params)
}

// planRequest is what staging and placement ask the planner for.
func (s volumeSpec) planRequest() untorn.PlanRequest {
	return untorn.PlanRequest{FSType: s.FSType, Unit: s.Unit, Cluster: s.Cluster, Policy: s.Policy, Source: s.Source}
}

// describe names a class for messages: "ext4 volumes with 16Ki atomic writes".
func (s volumeSpec) describe() string {
	src := ""
	if s.Source == untorn.SourceHardware {
		src = " in hardware"
	}
	return fmt.Sprintf("%s volumes with %s atomic writes%s", s.FSType, untorn.FormatSize(s.Unit), src)
}
