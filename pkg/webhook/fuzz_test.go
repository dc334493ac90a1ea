package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/untorn/untorn/pkg/webhook"
)

// serve posts body to the handler as the API server does and returns the
// status and the decoded answer (nil unless 200).
func serve(body []byte) (int, *admissionv1.AdmissionReview) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/mutate-pod", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	webhook.NewHandler(webhook.DefaultConfig()).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return -1, nil
	}
	return rec.Code, &out
}

// FuzzReview sends arbitrary AdmissionReview bodies through the handler. It
// never panics, and a pod it admits that opted in runs the shim in every
// container: the shim volume exactly as the driver serves it, one read-only
// mount at /untorn, LD_PRELOAD naming the shim and UNTORN_UNIT giving the
// pod's unit; admitting it again changes nothing.
//
//	go test -run '^$' -fuzz FuzzReview -fuzztime 10s ./pkg/webhook
func FuzzReview(f *testing.F) {
	var seeds []*corev1.Pod
	seeds = append(seeds, labelled(nil), labelled(map[string]string{webhook.LibcAnnotation: "musl", webhook.UnitAnnotation: "16Ki"}),
		labelled(map[string]string{webhook.UnitAnnotation: "12288"}))
	for _, c := range denyCases() {
		seeds = append(seeds, c.pod)
	}
	for _, c := range admitCases() {
		seeds = append(seeds, c.pod)
	}
	for _, p := range seeds {
		in := review(f, p, pods)
		body, err := json.Marshal(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		in.Request.SubResource, in.Request.Operation = "ephemeralcontainers", admissionv1.Update
		body, _ = json.Marshal(in)
		f.Add(body)
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","resource":{"version":"v1","resource":"pods"},"object":{"metadata":{"labels":{"untorn.csi.dev/inject":"true"}},"spec":{"containers":"db"}}}}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		serve(body) // whatever it is, no panic

		// The API server sends an object it decoded and encoded again:
		// check the promises on that form of the same request.
		var in admissionv1.AdmissionReview
		if utiljson.Unmarshal(body, &in) != nil || in.Request == nil {
			return
		}
		var pod corev1.Pod
		if utiljson.Unmarshal(in.Request.Object.Raw, &pod) != nil {
			return
		}
		raw, err := json.Marshal(&pod)
		if err != nil {
			return
		}
		in.Request.Object.Raw = raw
		in.APIVersion, in.Kind = "admission.k8s.io/v1", "AdmissionReview"
		body, _ = json.Marshal(&in)
		code, out := serve(body)
		if code != http.StatusOK {
			t.Fatalf("a well-formed review got status %d", code)
		}
		resp := out.Response
		req := in.Request
		creates := req.Resource == (pods) && req.SubResource == "" && (req.Operation == admissionv1.Create || req.Operation == "")
		if !resp.Allowed || !creates || !webhook.Wants(&pod) {
			return
		}
		patched := raw
		if resp.Patch != nil {
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatalf("undecodable patch %s: %v", resp.Patch, err)
			}
			if patched, err = p.Apply(raw); err != nil {
				return // the API server refuses a patch that does not apply
			}
		}
		var got corev1.Pod
		if err := utiljson.Unmarshal(patched, &got); err != nil {
			t.Fatalf("patched pod does not decode: %v", err)
		}
		checkRunsShim(t, &got)

		in.Request.Object.Raw = patched
		body, _ = json.Marshal(&in)
		if _, again := serve(body); again == nil || !again.Response.Allowed || again.Response.Patch != nil {
			t.Fatalf("reinvocation did not admit the injected pod unchanged: %+v", again)
		}
	})
}

// checkRunsShim asserts, independently of the webhook's own checks, that
// every container of an admitted opted-in pod loads the shim from the
// driver's read-only volume.
func checkRunsShim(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	libc := "glibc"
	if v, ok := pod.Annotations[webhook.LibcAnnotation]; ok {
		libc = v
	}
	unit := int64(webhook.DefaultUnit)
	if v, ok := pod.Annotations[webhook.UnitAnnotation]; ok {
		var err error
		if unit, err = webhook.ParseUnit(v); err != nil {
			t.Fatalf("admitted a pod with unit annotation %q: %v", v, err)
		}
	}
	preload := webhook.PreloadPath(libc)
	if libc != "glibc" && libc != "musl" {
		t.Fatalf("admitted libc %q", libc)
	}
	vols := 0
	for _, v := range pod.Spec.Volumes {
		if v.Name != webhook.VolumeName {
			continue
		}
		vols++
		s := v.VolumeSource
		if s.CSI == nil || s.CSI.Driver != webhook.DefaultDriverName || s.CSI.ReadOnly == nil || !*s.CSI.ReadOnly ||
			len(s.CSI.VolumeAttributes) != 1 || s.CSI.VolumeAttributes["type"] != "shim" || s.HostPath != nil || s.EmptyDir != nil {
			t.Fatalf("shim volume %+v", s)
		}
	}
	if vols != 1 {
		t.Fatalf("%d shim volumes", vols)
	}
	type ctr struct {
		name    string
		env     []corev1.EnvVar
		envFrom []corev1.EnvFromSource
		mounts  []corev1.VolumeMount
	}
	var all []ctr
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		all = append(all, ctr{c.Name, c.Env, c.EnvFrom, c.VolumeMounts})
	}
	for _, c := range pod.Spec.EphemeralContainers {
		all = append(all, ctr{c.Name, c.Env, c.EnvFrom, c.VolumeMounts})
	}
	for _, c := range all {
		atShim := 0
		for _, m := range c.mounts {
			p := path.Clean("/" + m.MountPath)
			if m.Name == webhook.VolumeName || p == "/" || p == webhook.MountPath || strings.HasPrefix(p, webhook.MountPath+"/") {
				atShim++
				if m.Name != webhook.VolumeName || p != webhook.MountPath || !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
					t.Fatalf("container %q: mount %+v where the shim is loaded from", c.name, m)
				}
			}
		}
		if atShim != 1 {
			t.Fatalf("container %q: %d mounts at or around %s, want the shim's only", c.name, atShim, webhook.MountPath)
		}
		var preloads, units []corev1.EnvVar
		for _, e := range c.env {
			switch {
			case e.Name == "LD_PRELOAD":
				preloads = append(preloads, e)
			case e.Name == "UNTORN_UNIT":
				units = append(units, e)
			case e.Name == "UNTORN_MODE" && (e.ValueFrom != nil || (e.Value != "" && e.Value != "on" && e.Value != "strict")):
				t.Fatalf("container %q: UNTORN_MODE %+v", c.name, e)
			}
		}
		if len(preloads) != 1 || preloads[0].ValueFrom != nil || !strings.Contains(":"+preloads[0].Value+":", ":"+preload+":") &&
			!strings.HasPrefix(preloads[0].Value, preload+":") && preloads[0].Value != preload {
			t.Fatalf("container %q: LD_PRELOAD %+v, want one naming %s", c.name, preloads, preload)
		}
		if len(units) != 1 || units[0].ValueFrom != nil || units[0].Value != strconv.FormatInt(unit, 10) {
			t.Fatalf("container %q: UNTORN_UNIT %+v, want %d", c.name, units, unit)
		}
		for _, src := range c.envFrom {
			if strings.HasPrefix("UNTORN_", src.Prefix) || strings.HasPrefix(src.Prefix, "UNTORN_") || strings.HasPrefix("LD_PRELOAD", src.Prefix) {
				t.Fatalf("container %q: envFrom with prefix %q", c.name, src.Prefix)
			}
		}
	}
}
