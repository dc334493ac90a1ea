// Package webhook implements the mutating admission webhook that injects the
// untorn writethrough shim into pods that opt in with the label
// untorn.csi.dev/inject: "true".
//
// An opted-in pod gets an inline CSI ephemeral volume of the driver
// (volumeAttributes {type: shim}) mounted read-only at /untorn in every
// container and init container, LD_PRELOAD pointing at the glibc or musl
// build of the shim, and UNTORN_UNIT, the database page size in bytes.
// Injection is idempotent: a pod, or a container, that already carries the
// volume, the mount or the variables is left as it is. An opted-in pod that
// would not run the shim in every container (its own volume or mount where
// the shim is loaded from, LD_PRELOAD or UNTORN_* variables the webhook
// cannot see or that switch the shim off) is denied.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	untorn "github.com/untorn/untorn/pkg/atomic"
	corev1 "k8s.io/api/core/v1"
)

const (
	// DefaultDriverName is the CSI driver that serves the shim volume.
	DefaultDriverName = "untorn.csi.dev"
	// InjectLabel opts a pod in when set to "true".
	InjectLabel = "untorn.csi.dev/inject"
	// LibcAnnotation selects the shim build: "glibc" (default) or "musl".
	LibcAnnotation = "untorn.csi.dev/libc"
	// UnitAnnotation is the atomic write unit in bytes (default 8192); a
	// Kubernetes quantity such as 16Ki is accepted too.
	UnitAnnotation = "untorn.csi.dev/unit"

	// VolumeName is the name of the injected inline volume.
	VolumeName = "untorn-shim"
	// MountPath is where the shim volume appears in every container.
	MountPath = "/untorn"
	// ShimLibrary is the file name of the preload library in each build dir.
	ShimLibrary = "libuntorn.so"
	// VolumeTypeAttribute and VolumeTypeShim select the shim volume kind.
	VolumeTypeAttribute = "type"
	VolumeTypeShim      = "shim"

	// DefaultUnit is the PostgreSQL page size.
	DefaultUnit = 8192
	// MinUnit and MaxUnit bound the accepted unit annotation.
	MinUnit = 512
	MaxUnit = 1 << 20

	envPreload = "LD_PRELOAD"
	envUnit    = "UNTORN_UNIT"
)

// Sentinel errors for a pod whose opt-in cannot be honoured. The handler
// denies such a pod: running a database that relies on the shim without it
// would silently give up the torn-write protection.
var (
	ErrBadUnit = errors.New("invalid " + UnitAnnotation + " annotation")
	ErrBadLibc = errors.New("invalid " + LibcAnnotation + " annotation")
)

// Config says what is injected.
type Config struct {
	// DriverName is the CSI driver of the inline volume.
	DriverName string
	// DefaultLibc is used when a pod has no libc annotation.
	DefaultLibc string
	// DefaultUnit is used when a pod has no unit annotation.
	DefaultUnit int64
}

// DefaultConfig returns the configuration the chart deploys by default.
func DefaultConfig() Config {
	return Config{DriverName: DefaultDriverName, DefaultLibc: "glibc", DefaultUnit: DefaultUnit}
}

// PatchOperation is one RFC 6902 JSON patch operation.
type PatchOperation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Wants reports whether the pod opted in to injection.
func Wants(pod *corev1.Pod) bool {
	return pod.Labels[InjectLabel] == "true"
}

// Libc returns the shim build the pod asks for.
func (c Config) Libc(pod *corev1.Pod) (string, error) {
	v, ok := pod.Annotations[LibcAnnotation]
	if !ok {
		return c.DefaultLibc, nil
	}
	switch v {
	case "glibc", "musl":
		return v, nil
	}
	return "", fmt.Errorf("%w: %q, want glibc or musl", ErrBadLibc, v)
}

// Unit returns the atomic write unit in bytes the pod asks for.
func (c Config) Unit(pod *corev1.Pod) (int64, error) {
	v, ok := pod.Annotations[UnitAnnotation]
	if !ok {
		return c.DefaultUnit, nil
	}
	return ParseUnit(v)
}

// ParseUnit parses a unit given in bytes ("16384") or as a quantity
// ("16Ki"); it must be a power of two in [MinUnit, MaxUnit].
func ParseUnit(v string) (int64, error) {
	v = strings.TrimSpace(v)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		q, qerr := untorn.ParseQuantity(v)
		if qerr != nil {
			return 0, fmt.Errorf("%w: %q is neither a byte count nor a quantity", ErrBadUnit, v)
		}
		var ok bool
		if n, ok = q.AsInt64(); !ok {
			return 0, fmt.Errorf("%w: %q is not a whole number of bytes", ErrBadUnit, v)
		}
	}
	if n < MinUnit || n > MaxUnit || n&(n-1) != 0 {
		return 0, fmt.Errorf("%w: %q must be a power of two between %d and %d bytes", ErrBadUnit, v, MinUnit, MaxUnit)
	}
	return n, nil
}

// PreloadPath is the LD_PRELOAD value for a libc build.
func PreloadPath(libc string) string {
	return MountPath + "/" + libc + "/" + ShimLibrary
}

// Patch returns the JSON patch that injects the shim into pod, or nil when
// the pod did not opt in or already carries everything.
func (c Config) Patch(pod *corev1.Pod) ([]PatchOperation, error) {
	if !Wants(pod) {
		return nil, nil
	}
	libc, err := c.Libc(pod)
	if err != nil {
		return nil, err
	}
	unit, err := c.Unit(pod)
	if err != nil {
		return nil, err
	}
	preload := PreloadPath(libc)
	unitText := strconv.FormatInt(unit, 10)
	if err := c.check(pod, libc, preload, unitText); err != nil {
		return nil, err
	}
	var ops []PatchOperation
	if !hasVolume(pod.Spec.Volumes) {
		vol := corev1.Volume{Name: VolumeName, VolumeSource: c.shimSource()}
		ops = appendItem(ops, "/spec/volumes", pod.Spec.Volumes == nil, vol)
	}
	for _, ctr := range containers(pod) {
		ops = append(ops, containerOps(ctr, preload, unitText)...)
	}
	return ops, nil
}

// PatchJSON is Patch encoded as JSON; nil when there is nothing to patch.
func (c Config) PatchJSON(pod *corev1.Pod) ([]byte, error) {
	ops, err := c.Patch(pod)
	if err != nil || len(ops) == 0 {
		return nil, err
	}
	return json.Marshal(ops)
}

// containerOps injects into one container of a pod that passed check: any
// mount of the shim volume is the right one, LD_PRELOAD and UNTORN_UNIT are
// plain values set at most once, and UNTORN_UNIT agrees with the pod's unit.
func containerOps(ctr container, preload, unit string) []PatchOperation {
	var ops []PatchOperation
	base, mounts, env := ctr.path, ctr.mounts(), ctr.env()
	if !hasMount(mounts) {
		m := corev1.VolumeMount{Name: VolumeName, MountPath: MountPath, ReadOnly: true}
		ops = appendItem(ops, base+"/volumeMounts", mounts == nil, m)
	}
	envNil := env == nil
	if i := envIndex(env, envPreload); i < 0 {
		ops = appendItem(ops, base+"/env", envNil, corev1.EnvVar{Name: envPreload, Value: preload})
		envNil = false
	} else if e := env[i]; !containsField(e.Value, preload) {
		// Keep the container's own preloads; ours goes first so that its
		// write wrappers see the calls before anything else does.
		value := preload
		if strings.TrimSpace(e.Value) != "" {
			value += ":" + e.Value
		}
		ops = append(ops, PatchOperation{Op: "replace", Path: fmt.Sprintf("%s/env/%d/value", base, i), Value: value})
	}
	if envIndex(env, envUnit) < 0 {
		ops = appendItem(ops, base+"/env", envNil, corev1.EnvVar{Name: envUnit, Value: unit})
	}
	return ops
}

// appendItem adds v to the list at path, creating the list when it is absent.
func appendItem(ops []PatchOperation, path string, absent bool, v any) []PatchOperation {
	if absent {
		return append(ops, PatchOperation{Op: "add", Path: path, Value: []any{v}})
	}
	return append(ops, PatchOperation{Op: "add", Path: path + "/-", Value: v})
}

func hasVolume(vols []corev1.Volume) bool {
	for _, v := range vols {
		if v.Name == VolumeName {
			return true
		}
	}
	return false
}

func hasMount(mounts []corev1.VolumeMount) bool {
	for _, m := range mounts {
		if m.Name == VolumeName {
			return true
		}
	}
	return false
}

func envIndex(env []corev1.EnvVar, name string) int {
	for i, e := range env {
		if e.Name == name {
			return i
		}
	}
	return -1
}

// containsField reports whether an LD_PRELOAD list (colon or space
// separated) already names lib.
func containsField(list, lib string) bool {
	for _, f := range preloadFields(list) {
		if path.Clean(f) == lib {
			return true
		}
	}
	return false
}
