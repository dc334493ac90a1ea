package webhook_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/untorn/untorn/pkg/webhook"
)

func ptr[T any](v T) *T { return &v }

// shimVolume is the volume exactly as the webhook injects it.
func shimVolume() corev1.Volume {
	return corev1.Volume{Name: webhook.VolumeName, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: "untorn.csi.dev", ReadOnly: ptr(true), VolumeAttributes: map[string]string{"type": "shim"}}}}
}

func shimMount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: webhook.VolumeName, MountPath: "/untorn", ReadOnly: true}
}

// withPod returns a labelled pod with one container "db" changed by edit.
func withPod(edit func(p *corev1.Pod)) *corev1.Pod {
	p := labelled(map[string]string{webhook.UnitAnnotation: "16Ki"})
	edit(p)
	return p
}

func db(p *corev1.Pod) *corev1.Container { return &p.Spec.Containers[0] }

func configMapFrom(prefix string) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db-config"}}}
}

type denyCase struct {
	name string
	pod  *corev1.Pod
	says string // a part of the message that tells what to change
}

// denyCases are the ways an opted-in pod could start a container without
// the shim, or with something else loaded from where the shim is expected.
func denyCases() []denyCase {
	secretRef := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}
	hostPath := corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/opt/evil"}}
	return []denyCase{
		{"LD_PRELOAD from valueFrom", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "LD_PRELOAD", ValueFrom: secretRef}}
		}), "LD_PRELOAD comes from valueFrom"},
		{"UNTORN_UNIT from valueFrom", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_UNIT", ValueFrom: secretRef}}
		}), "UNTORN_UNIT comes from valueFrom"},
		{"UNTORN_MODE from valueFrom", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_MODE", ValueFrom: secretRef}}
		}), "UNTORN_MODE comes from valueFrom"},
		{"LD_PRELOAD set twice", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "LD_PRELOAD", Value: glibc}, {Name: "LD_PRELOAD", Value: ""}}
		}), "LD_PRELOAD is set more than once"},
		{"LD_PRELOAD names the other build", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "LD_PRELOAD", Value: "/untorn/musl/libuntorn.so"}}
		}), "remove it from LD_PRELOAD"},
		{"LD_PRELOAD names another file in /untorn", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "LD_PRELOAD", Value: "/untorn/glibc/other.so:/usr/lib/libjemalloc.so.2"}}
		}), "/untorn/glibc/other.so"},
		{"UNTORN_UNIT disagrees with the annotation", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_UNIT", Value: "4096"}}
		}), "remove UNTORN_UNIT or set the annotation"},
		{"UNTORN_UNIT as a quantity", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_UNIT", Value: "16K"}}
		}), "UNTORN_UNIT is \"16K\""},
		{"UNTORN_MODE off", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_MODE", Value: "off"}}
		}), "UNTORN_MODE=\"off\""},
		{"UNTORN_MODE unsafe-direct-bench", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_MODE", Value: "unsafe-direct-bench"}}
		}), "use on or strict"},
		{"envFrom without a prefix", withPod(func(p *corev1.Pod) {
			db(p).EnvFrom = []corev1.EnvFromSource{configMapFrom("")}
		}), "envFrom configMapRef \"db-config\""},
		{"envFrom secret with a prefix that forms UNTORN_ names", withPod(func(p *corev1.Pod) {
			db(p).EnvFrom = []corev1.EnvFromSource{{Prefix: "UNT", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}}
		}), "envFrom secretRef \"x\""},
		{"envFrom with a prefix that forms LD_PRELOAD", withPod(func(p *corev1.Pod) {
			db(p).EnvFrom = []corev1.EnvFromSource{configMapFrom("LD_")}
		}), "give it a prefix"},
		{"own hostPath volume named untorn-shim", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: webhook.VolumeName, VolumeSource: hostPath}}
		}), "rename the pod's own volume"},
		{"shim volume writable", withPod(func(p *corev1.Pod) {
			v := shimVolume()
			v.CSI.ReadOnly = ptr(false)
			p.Spec.Volumes = []corev1.Volume{v}
		}), "readOnly: true"},
		{"shim volume of another driver", withPod(func(p *corev1.Pod) {
			v := shimVolume()
			v.CSI.Driver = "evil.example.com"
			p.Spec.Volumes = []corev1.Volume{v}
		}), "is not the shim volume"},
		{"shim volume with extra attributes", withPod(func(p *corev1.Pod) {
			v := shimVolume()
			v.CSI.VolumeAttributes["dir"] = "/opt"
			p.Spec.Volumes = []corev1.Volume{v}
		}), "is not the shim volume"},
		{"own volume mounted at /untorn", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "libs", VolumeSource: hostPath}}
			db(p).VolumeMounts = []corev1.VolumeMount{{Name: "libs", MountPath: "/untorn", ReadOnly: true}}
		}), "mounts its own volume \"libs\" at /untorn"},
		{"own volume mounted at /untorn/ spelled otherwise", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "libs", VolumeSource: hostPath}}
			db(p).VolumeMounts = []corev1.VolumeMount{{Name: "libs", MountPath: "//untorn/./"}}
		}), "mount it elsewhere"},
		{"own volume mounted inside /untorn", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "libs", VolumeSource: hostPath}}
			db(p).VolumeMounts = []corev1.VolumeMount{{Name: "libs", MountPath: "/untorn/glibc"}}
		}), "inside /untorn"},
		{"own volume mounted at /", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: hostPath}}
			db(p).VolumeMounts = []corev1.VolumeMount{{Name: "root", MountPath: "/"}}
		}), "which holds /untorn"},
		{"shim volume mounted with a subPath", withPod(func(p *corev1.Pod) {
			m := shimMount()
			m.SubPath = "musl"
			db(p).VolumeMounts = []corev1.VolumeMount{m}
		}), "no subPath"},
		{"shim volume mounted writable", withPod(func(p *corev1.Pod) {
			m := shimMount()
			m.ReadOnly = false
			db(p).VolumeMounts = []corev1.VolumeMount{m}
		}), "mount it only read-only"},
		{"shim volume mounted elsewhere", withPod(func(p *corev1.Pod) {
			m := shimMount()
			m.MountPath = "/opt/untorn"
			db(p).VolumeMounts = []corev1.VolumeMount{m}
		}), "leave the mount to the webhook"},
		{"block device at the library path", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "blk"}}
			db(p).VolumeDevices = []corev1.VolumeDevice{{Name: "blk", DevicePath: "/untorn/glibc/libuntorn.so"}}
		}), "block device \"blk\""},
		{"init container with the shim switched off", withPod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "initdb", Env: []corev1.EnvVar{{Name: "UNTORN_MODE", Value: "off"}}}}
		}), "init container \"initdb\""},
		{"ephemeral container with LD_PRELOAD from valueFrom", withPod(func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Env: []corev1.EnvVar{{Name: "LD_PRELOAD", ValueFrom: secretRef}}}}}
		}), "ephemeral container \"debug\""},
	}
}

// Every such pod is denied with a message naming what to change.
func TestDeniesPodsThatWouldNotRunTheShim(t *testing.T) {
	for _, tc := range denyCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := webhook.DefaultConfig().Patch(tc.pod)
			if !errors.Is(err, webhook.ErrUnprotected) {
				t.Errorf("Patch: %v, want ErrUnprotected", err)
			}
			resp := post(t, review(t, tc.pod, pods)).Response
			if resp.Allowed || resp.Patch != nil {
				t.Fatalf("admitted (patch %s)", resp.Patch)
			}
			if resp.Result == nil || resp.Result.Code != http.StatusBadRequest || resp.Result.Reason != metav1.StatusReasonInvalid {
				t.Fatalf("denial result %+v, want 400 Invalid", resp.Result)
			}
			if !strings.Contains(resp.Result.Message, tc.says) {
				t.Errorf("message %q does not say %q", resp.Result.Message, tc.says)
			}
		})
	}
}

type admitCase struct {
	name    string
	pod     *corev1.Pod
	patched bool
}

// admitCases are what the checks must not refuse: the pod's own settings
// that keep the shim working, and a pod the webhook already injected.
func admitCases() []admitCase {
	return []admitCase{
		{"envFrom with a safe prefix", withPod(func(p *corev1.Pod) {
			db(p).EnvFrom = []corev1.EnvFromSource{configMapFrom("APP_")}
		}), true},
		{"UNTORN_MODE strict and tuning variables", withPod(func(p *corev1.Pod) {
			db(p).Env = []corev1.EnvVar{{Name: "UNTORN_MODE", Value: "strict"}, {Name: "UNTORN_EXCLUDE", Value: ""}, {Name: "UNTORN_UNIT", Value: "16384"}}
		}), true},
		{"shim volume and mount written by hand", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{shimVolume()}
			db(p).VolumeMounts = []corev1.VolumeMount{shimMount()}
			db(p).Env = []corev1.EnvVar{{Name: "LD_PRELOAD", Value: glibc}, {Name: "UNTORN_UNIT", Value: "16384"}}
		}), false},
		{"own volumes beside /untorn", withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data"}}
			db(p).VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/untorn-data"}, {Name: "data", MountPath: "/var/lib/untorn", SubPath: "x"}}
		}), true},
		{"ephemeral container at creation", withPod(func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}}
		}), true},
	}
}

func TestAdmitsPodsThatRunTheShim(t *testing.T) {
	const unit = "16384"
	for _, tc := range admitCases() {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, review(t, tc.pod, pods)).Response
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if (resp.Patch != nil) != tc.patched {
				t.Fatalf("patch %s, want patched=%v", resp.Patch, tc.patched)
			}
			got := apply(t, tc.pod, resp)
			checkInjected(t, got, glibc, unit)
			for _, c := range got.Spec.EphemeralContainers {
				ec := corev1.Container{Name: c.Name, Env: c.Env, VolumeMounts: c.VolumeMounts}
				checkInjected(t, &corev1.Pod{Spec: corev1.PodSpec{Volumes: got.Spec.Volumes, Containers: []corev1.Container{ec}}}, glibc, unit)
			}
			if again := post(t, review(t, got, pods)).Response; !again.Allowed || again.Patch != nil {
				t.Errorf("reinvocation: allowed %v, patch %s; want admitted unchanged", again.Allowed, again.Patch)
			}
		})
	}
}

// kubectl debug adds an ephemeral container to a running pod through the
// pods/ephemeralcontainers subresource: it gets the shim like the others,
// and only it is patched.
func TestEphemeralContainersSubresource(t *testing.T) {
	injected := apply(t, labelled(nil), post(t, review(t, labelled(nil), pods)).Response)
	injected.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}}
	in := review(t, injected, pods)
	in.Request.SubResource = "ephemeralcontainers"
	in.Request.Operation = admissionv1.Update
	resp := post(t, in).Response
	if !resp.Allowed || resp.Patch == nil {
		t.Fatalf("allowed %v, patch %s; want the debug container injected", resp.Allowed, resp.Patch)
	}
	got := apply(t, injected, resp)
	dbg := got.Spec.EphemeralContainers[0]
	checkInjected(t, &corev1.Pod{Spec: corev1.PodSpec{Volumes: got.Spec.Volumes,
		Containers: []corev1.Container{{Name: dbg.Name, Env: dbg.Env, VolumeMounts: dbg.VolumeMounts}}}}, glibc, "8192")

	bad := injected.DeepCopy()
	bad.Spec.EphemeralContainers[0].Env = []corev1.EnvVar{{Name: "UNTORN_MODE", Value: "off"}}
	in = review(t, bad, pods)
	in.Request.SubResource = "ephemeralcontainers"
	in.Request.Operation = admissionv1.Update
	if resp := post(t, in).Response; resp.Allowed {
		t.Errorf("a debug container with the shim switched off was admitted")
	}
}

// The API server only sends opted-in pods; one the webhook cannot decode is
// refused rather than admitted without the shim.
func TestDeniesUndecodablePod(t *testing.T) {
	in := review(t, labelled(nil), pods)
	in.Request.Object.Raw = []byte(`{"metadata":{"labels":{"untorn.csi.dev/inject":"true"}},"spec":{"containers":"db"}}`)
	resp := post(t, in).Response
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Errorf("allowed %v, result %+v; want a 400 denial", resp.Allowed, resp.Result)
	}
}
