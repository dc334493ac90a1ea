package webhook_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/untorn/untorn/pkg/webhook"
)

func labelled(annotations map[string]string, ctrs ...corev1.Container) *corev1.Pod {
	if len(ctrs) == 0 {
		ctrs = []corev1.Container{{Name: "db", Image: "postgres:17"}}
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "default",
			Labels: map[string]string{webhook.InjectLabel: "true"}, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: ctrs},
	}
}

// review wraps pod in the AdmissionReview the API server sends.
func review(t testing.TB, pod *corev1.Pod, resource metav1.GroupVersionResource) *admissionv1.AdmissionReview {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	r := &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("7f0c1b5e-0000-4000-8000-000000000001"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  resource,
			Namespace: "default",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	return r
}

var pods = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// post sends the review through the real HTTP handler and decodes the answer.
func post(t *testing.T, in *admissionv1.AdmissionReview) *admissionv1.AdmissionReview {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/mutate-pod", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	webhook.NewHandler(webhook.DefaultConfig()).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Fatalf("response is %s %s, want admission.k8s.io/v1 AdmissionReview", out.APIVersion, out.Kind)
	}
	if out.Response == nil || out.Response.UID != in.Request.UID {
		t.Fatalf("response does not answer request %s: %+v", in.Request.UID, out.Response)
	}
	return &out
}

// apply applies the response's patch to pod and decodes the result strictly.
func apply(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	if resp.Patch == nil {
		return pod
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", resp.Patch, err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", resp.Patch, err)
	}
	var got corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func env(c corev1.Container, name string) (string, int) {
	n, v := 0, ""
	for _, e := range c.Env {
		if e.Name == name {
			n++
			v = e.Value
		}
	}
	return v, n
}

// checkInjected asserts that pod carries exactly one shim volume and every
// container exactly one read-only mount and one of each variable.
func checkInjected(t *testing.T, pod *corev1.Pod, preload, unit string) {
	t.Helper()
	var vols int
	for _, v := range pod.Spec.Volumes {
		if v.Name != webhook.VolumeName {
			continue
		}
		vols++
		if v.CSI == nil || v.CSI.Driver != "untorn.csi.dev" || v.CSI.ReadOnly == nil || !*v.CSI.ReadOnly ||
			v.CSI.VolumeAttributes["type"] != "shim" {
			t.Errorf("shim volume is %+v", v.VolumeSource)
		}
	}
	if vols != 1 {
		t.Errorf("%d shim volumes, want 1", vols)
	}
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		var mounts int
		for _, m := range c.VolumeMounts {
			if m.Name == webhook.VolumeName {
				mounts++
				if m.MountPath != "/untorn" || !m.ReadOnly {
					t.Errorf("container %s: mount %+v, want read-only at /untorn", c.Name, m)
				}
			}
		}
		if mounts != 1 {
			t.Errorf("container %s: %d shim mounts, want 1", c.Name, mounts)
		}
		if v, n := env(c, "LD_PRELOAD"); n != 1 || v != preload {
			t.Errorf("container %s: LD_PRELOAD %q (%d entries), want %q", c.Name, v, n, preload)
		}
		if v, n := env(c, "UNTORN_UNIT"); n != 1 || v != unit {
			t.Errorf("container %s: UNTORN_UNIT %q (%d entries), want %q", c.Name, v, n, unit)
		}
	}
}

const glibc = "/untorn/glibc/libuntorn.so"

func TestReview(t *testing.T) {
	injected := apply(t, labelled(nil), webhook.NewHandler(webhook.DefaultConfig()).Review(review(t, labelled(nil), pods).Request))
	twoCtr := labelled(map[string]string{webhook.UnitAnnotation: "16Ki"},
		corev1.Container{Name: "db", Env: []corev1.EnvVar{{Name: "LD_PRELOAD", Value: "/usr/lib/libjemalloc.so.2"}}},
		corev1.Container{Name: "exporter", Env: []corev1.EnvVar{{Name: "UNTORN_UNIT", Value: "16384"}}})
	twoCtr.Spec.InitContainers = []corev1.Container{{Name: "initdb", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql"}}}}
	twoCtr.Spec.Volumes = []corev1.Volume{{Name: "data"}}
	unlabelled := labelled(map[string]string{webhook.LibcAnnotation: "musl"})
	unlabelled.Labels = map[string]string{"app": "db"}
	falseLabel := labelled(nil)
	falseLabel.Labels[webhook.InjectLabel] = "false"

	tests := []struct {
		name     string
		pod      *corev1.Pod
		resource metav1.GroupVersionResource
		allowed  bool
		patched  bool
		check    func(t *testing.T, got *corev1.Pod)
	}{
		{name: "labelled pod", pod: labelled(nil), resource: pods, allowed: true, patched: true,
			check: func(t *testing.T, got *corev1.Pod) { checkInjected(t, got, glibc, "8192") }},
		{name: "unlabelled pod", pod: unlabelled, resource: pods, allowed: true},
		{name: "label not true", pod: falseLabel, resource: pods, allowed: true},
		{name: "already injected pod", pod: injected, resource: pods, allowed: true},
		{name: "musl annotation", pod: labelled(map[string]string{webhook.LibcAnnotation: "musl"}), resource: pods, allowed: true, patched: true,
			check: func(t *testing.T, got *corev1.Pod) { checkInjected(t, got, "/untorn/musl/libuntorn.so", "8192") }},
		{name: "unit annotation in bytes", pod: labelled(map[string]string{webhook.UnitAnnotation: "16384"}), resource: pods, allowed: true, patched: true,
			check: func(t *testing.T, got *corev1.Pod) { checkInjected(t, got, glibc, "16384") }},
		{name: "bad unit annotation", pod: labelled(map[string]string{webhook.UnitAnnotation: "lots"}), resource: pods},
		{name: "unit not a power of two", pod: labelled(map[string]string{webhook.UnitAnnotation: "12288"}), resource: pods},
		{name: "unit too large", pod: labelled(map[string]string{webhook.UnitAnnotation: "2Mi"}), resource: pods},
		{name: "bad libc annotation", pod: labelled(map[string]string{webhook.LibcAnnotation: "uclibc"}), resource: pods},
		{name: "other resource untouched", pod: labelled(nil), resource: metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, allowed: true},
		{name: "init containers, own preload and matching own unit kept", pod: twoCtr, resource: pods, allowed: true, patched: true,
			check: func(t *testing.T, got *corev1.Pod) {
				db, exporter, initdb := got.Spec.Containers[0], got.Spec.Containers[1], got.Spec.InitContainers[0]
				if v, _ := env(db, "LD_PRELOAD"); v != glibc+":/usr/lib/libjemalloc.so.2" {
					t.Errorf("db LD_PRELOAD %q", v)
				}
				if v, n := env(exporter, "UNTORN_UNIT"); v != "16384" || n != 1 {
					t.Errorf("exporter UNTORN_UNIT %q (%d entries), want its own 16384 once", v, n)
				}
				if v, _ := env(initdb, "UNTORN_UNIT"); v != "16384" {
					t.Errorf("initdb UNTORN_UNIT %q", v)
				}
				if len(initdb.VolumeMounts) != 2 || len(got.Spec.Volumes) != 2 {
					t.Errorf("existing volumes or mounts lost: %+v %+v", initdb.VolumeMounts, got.Spec.Volumes)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := post(t, review(t, tc.pod, tc.resource))
			resp := out.Response
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.allowed, resp.Result)
			}
			if !tc.allowed {
				if resp.Result == nil || resp.Result.Code != http.StatusBadRequest || resp.Result.Reason != metav1.StatusReasonInvalid {
					t.Errorf("denial result %+v, want 400 Invalid", resp.Result)
				}
				if resp.Patch != nil {
					t.Errorf("denied pod got a patch %s", resp.Patch)
				}
				return
			}
			if (resp.Patch != nil) != tc.patched {
				t.Fatalf("patch %s, want patched=%v", resp.Patch, tc.patched)
			}
			got := apply(t, tc.pod, resp)
			if tc.check != nil {
				tc.check(t, got)
			}
			// A second pass (reinvocation) never injects again.
			if again := post(t, review(t, got, tc.resource)).Response; again.Patch != nil {
				t.Errorf("second pass patched again: %s", again.Patch)
			}
		})
	}
}

func TestParseUnit(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  error
	}{
		{"8192", 8192, nil},
		{"16Ki", 16384, nil},
		{"1Mi", 1 << 20, nil},
		{"512", 512, nil},
		{"256", 0, webhook.ErrBadUnit},
		{"0", 0, webhook.ErrBadUnit},
		{"-8192", 0, webhook.ErrBadUnit},
		{"8k", 0, webhook.ErrBadUnit}, // 8000 bytes
		{"1.5Ki", 0, webhook.ErrBadUnit},
		{"", 0, webhook.ErrBadUnit},
		// exponents the quantity parser would spend minutes on: refused
		{"1e-2147483647", 0, webhook.ErrBadUnit},
		{"9223E72036854775807", 0, webhook.ErrBadUnit},
		{"16e1000", 0, webhook.ErrBadUnit},
		{"8192e0", 8192, nil},
	}
	for _, tc := range tests {
		got, err := webhook.ParseUnit(tc.in)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("ParseUnit(%q) = %d, %v; want %d, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestServeHTTPRejectsMalformedRequests(t *testing.T) {
	h := webhook.NewHandler(webhook.DefaultConfig())
	const ctJSON = "application/json"
	valid := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1"}}`
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		code        int
	}{
		{"GET", http.MethodGet, ctJSON, "", http.StatusMethodNotAllowed},
		{"valid", http.MethodPost, ctJSON, valid, http.StatusOK},
		{"JSON with charset", http.MethodPost, "application/json; charset=utf-8", valid, http.StatusOK},
		{"no content type", http.MethodPost, "", valid, http.StatusUnsupportedMediaType},
		{"YAML", http.MethodPost, "application/yaml", valid, http.StatusUnsupportedMediaType},
		{"protobuf", http.MethodPost, "application/vnd.kubernetes.protobuf", valid, http.StatusUnsupportedMediaType},
		{"not JSON", http.MethodPost, ctJSON, "{", http.StatusBadRequest},
		{"wrong kind", http.MethodPost, ctJSON, `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}`, http.StatusBadRequest},
		{"no request", http.MethodPost, ctJSON, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"body over the limit", http.MethodPost, ctJSON, valid + strings.Repeat(" ", webhook.MaxReviewBytes), http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, "/mutate-pod", bytes.NewBufferString(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Errorf("status %d, want %d", rec.Code, tc.code)
			}
		})
	}
}
