package webhook

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ErrUnprotected is wrapped by the error for an opted-in pod that, once
// admitted, would run a container without the shim (or with the shim
// switched off): the webhook denies it rather than let a database that
// relies on the shim start with its torn-page defence disabled.
var ErrUnprotected = errors.New("the pod opted in to the untorn shim but would not run it")

const (
	envPrefix = "UNTORN_"
	envMode   = "UNTORN_MODE"
)

// container is the part of an init, regular or ephemeral container that
// decides whether the shim is loaded in it.
type container struct {
	kind    string // "container", "init container", "ephemeral container"
	path    string // JSON pointer of the container in the pod
	c       *corev1.Container
	ephemer *corev1.EphemeralContainerCommon
}

func (c container) name() string {
	if c.ephemer != nil {
		return c.ephemer.Name
	}
	return c.c.Name
}

func (c container) env() []corev1.EnvVar {
	if c.ephemer != nil {
		return c.ephemer.Env
	}
	return c.c.Env
}

func (c container) envFrom() []corev1.EnvFromSource {
	if c.ephemer != nil {
		return c.ephemer.EnvFrom
	}
	return c.c.EnvFrom
}

func (c container) mounts() []corev1.VolumeMount {
	if c.ephemer != nil {
		return c.ephemer.VolumeMounts
	}
	return c.c.VolumeMounts
}

func (c container) devices() []corev1.VolumeDevice {
	if c.ephemer != nil {
		return c.ephemer.VolumeDevices
	}
	return c.c.VolumeDevices
}

// containers lists every container of the pod in patch order.
func containers(pod *corev1.Pod) []container {
	var out []container
	for i := range pod.Spec.InitContainers {
		out = append(out, container{kind: "init container", path: fmt.Sprintf("/spec/initContainers/%d", i), c: &pod.Spec.InitContainers[i]})
	}
	for i := range pod.Spec.Containers {
		out = append(out, container{kind: "container", path: fmt.Sprintf("/spec/containers/%d", i), c: &pod.Spec.Containers[i]})
	}
	for i := range pod.Spec.EphemeralContainers {
		out = append(out, container{kind: "ephemeral container", path: fmt.Sprintf("/spec/ephemeralContainers/%d", i),
			ephemer: &pod.Spec.EphemeralContainers[i].EphemeralContainerCommon})
	}
	return out
}

// shimSource is the only volume source the volume named VolumeName may have.
func (c Config) shimSource() corev1.VolumeSource {
	readOnly := true
	return corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver:           c.DriverName,
		ReadOnly:         &readOnly,
		VolumeAttributes: map[string]string{VolumeTypeAttribute: VolumeTypeShim},
	}}
}

// check returns an ErrUnprotected error listing everything in the pod that
// would keep the shim from loading, or load something else in its place, in
// some container; nil when the pod can be injected (or already is).
func (c Config) check(pod *corev1.Pod, libc, preload, unit string) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	vols := 0
	for _, v := range pod.Spec.Volumes {
		if v.Name != VolumeName {
			continue
		}
		if vols++; vols > 1 {
			add("more than one volume is named %s", VolumeName)
		}
		if !reflect.DeepEqual(v.VolumeSource, c.shimSource()) {
			add("volume %s is not the shim volume: the name is reserved for the inline CSI volume {driver: %s, readOnly: true, volumeAttributes: {%s: %s}}; rename the pod's own volume or remove it",
				VolumeName, c.DriverName, VolumeTypeAttribute, VolumeTypeShim)
		}
	}
	for _, ctr := range containers(pod) {
		where := fmt.Sprintf("%s %q", ctr.kind, ctr.name())
		checkEnv(where, ctr, libc, preload, unit, add)
		checkMounts(where, ctr, add)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnprotected, strings.Join(problems, "; "))
}

func checkEnv(where string, ctr container, libc, preload, unit string, add func(string, ...any)) {
	seen := map[string]int{}
	for _, e := range ctr.env() {
		if e.Name != envPreload && !strings.HasPrefix(e.Name, envPrefix) {
			continue
		}
		if seen[e.Name]++; seen[e.Name] == 2 {
			add("%s: %s is set more than once (the last one wins); set it once", where, e.Name)
		}
		if e.ValueFrom != nil {
			add("%s: %s comes from valueFrom, which the webhook cannot see; set it as a plain value or remove it", where, e.Name)
			continue
		}
		switch e.Name {
		case envPreload:
			for _, f := range preloadFields(e.Value) {
				if underShimDir(f) && path.Clean(f) != preload {
					add("%s: LD_PRELOAD names %s, but the shim for %s=%s is %s; remove it from LD_PRELOAD", where, f, LibcAnnotation, libc, preload)
				}
			}
		case envUnit:
			if e.Value != unit {
				add("%s: UNTORN_UNIT is %q but the pod's unit is %s (annotation %s); remove UNTORN_UNIT or set the annotation to it", where, e.Value, unit, UnitAnnotation)
			}
		case envMode:
			switch e.Value {
			case "", "on", "strict":
			default:
				add("%s: UNTORN_MODE=%q does not protect page writes; use on or strict, or remove it", where, e.Value)
			}
		}
	}
	for _, src := range ctr.envFrom() {
		p := src.Prefix
		if strings.HasPrefix(envPreload, p) || strings.HasPrefix(envPrefix, p) || strings.HasPrefix(p, envPrefix) {
			add("%s: envFrom %s could set LD_PRELOAD or UNTORN_* variables the webhook cannot see; give it a prefix that cannot form those names, or list its variables under env",
				where, envFromName(src))
		}
	}
}

func checkMounts(where string, ctr container, add func(string, ...any)) {
	shimMounts := 0
	for _, m := range ctr.mounts() {
		p := cleanPath(m.MountPath)
		switch {
		case m.Name == VolumeName:
			if shimMounts++; shimMounts == 2 {
				add("%s: mounts %s more than once; mount it once at %s", where, VolumeName, MountPath)
			}
			if p != MountPath || !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
				add("%s: mounts %s at %q (readOnly %v, subPath %q); mount it only read-only at %s with no subPath, or leave the mount to the webhook",
					where, VolumeName, m.MountPath, m.ReadOnly, m.SubPath+m.SubPathExpr, MountPath)
			}
		case p == MountPath:
			add("%s: mounts its own volume %q at %s, where LD_PRELOAD loads the shim from; mount it elsewhere", where, m.Name, MountPath)
		case underShimDir(p):
			add("%s: mounts volume %q at %s, inside %s where the shim is loaded from; mount it elsewhere", where, m.Name, m.MountPath, MountPath)
		case isParent(p):
			add("%s: mounts volume %q at %s, which holds %s; mount it elsewhere", where, m.Name, m.MountPath, MountPath)
		}
	}
	for _, d := range ctr.devices() {
		if p := cleanPath(d.DevicePath); p == MountPath || underShimDir(p) || isParent(p) {
			add("%s: block device %q at %s would take the place of the shim at %s; put it elsewhere", where, d.Name, d.DevicePath, MountPath)
		}
	}
}

func envFromName(src corev1.EnvFromSource) string {
	switch {
	case src.ConfigMapRef != nil:
		return fmt.Sprintf("configMapRef %q", src.ConfigMapRef.Name)
	case src.SecretRef != nil:
		return fmt.Sprintf("secretRef %q", src.SecretRef.Name)
	}
	return "source"
}

// cleanPath resolves a mount path as the container runtime does: relative
// to the root, with "." and ".." and repeated slashes folded.
func cleanPath(p string) string {
	return path.Clean("/" + p)
}

// underShimDir reports whether p lies inside MountPath (not MountPath itself).
func underShimDir(p string) bool {
	return strings.HasPrefix(cleanPath(p), MountPath+"/")
}

// isParent reports whether p is a directory above MountPath.
func isParent(p string) bool {
	p = cleanPath(p)
	return p != MountPath && strings.HasPrefix(MountPath+"/", strings.TrimSuffix(p, "/")+"/")
}

// preloadFields splits an LD_PRELOAD list (colon or space separated).
func preloadFields(list string) []string {
	return strings.FieldsFunc(list, func(r rune) bool { return r == ':' || r == ' ' })
}
