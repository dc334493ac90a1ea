package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
)

// maxReviewBytes bounds a request body; the API server sends at most a few
// MiB for a pod.
const maxReviewBytes = 8 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handler answers AdmissionReview requests for pods.
type Handler struct {
	Config Config
}

// NewHandler returns a handler injecting according to cfg.
func NewHandler(cfg Config) *Handler {
	return &Handler{Config: cfg}
}

// Review answers one AdmissionReview. It never fails a request it does not
// understand (another resource, an undecodable object): those are allowed
// unchanged. It denies only an opted-in pod whose annotations are invalid.
func (h *Handler) Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podResource || req.SubResource != "" {
		return resp
	}
	if req.Operation != admissionv1.Create && req.Operation != "" {
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		klog.InfoS("allowing undecodable pod unchanged", "uid", req.UID, "err", err)
		return resp
	}
	patch, err := h.Config.PatchJSON(&pod)
	if err != nil {
		klog.InfoS("denying pod with invalid shim annotations", "namespace", req.Namespace, "pod", podName(&pod), "err", err)
		resp.Allowed = false
		resp.Result = &metav1.Status{
			Status:  metav1.StatusFailure,
			Code:    http.StatusBadRequest,
			Reason:  metav1.StatusReasonInvalid,
			Message: err.Error(),
		}
		return resp
	}
	if patch == nil {
		return resp
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	klog.V(4).InfoS("injecting shim", "namespace", req.Namespace, "pod", podName(&pod))
	return resp
}

// ReviewObject answers a whole AdmissionReview object.
func (h *Handler) ReviewObject(in *admissionv1.AdmissionReview) (*admissionv1.AdmissionReview, error) {
	if in.Request == nil {
		return nil, errors.New("admission review has no request")
	}
	out := &admissionv1.AdmissionReview{Response: h.Review(in.Request)}
	out.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("AdmissionReview"))
	return out, nil
}

// ServeHTTP implements the webhook endpoint.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil || len(body) > maxReviewBytes {
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(w, fmt.Sprintf("decode AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	gvk := in.GroupVersionKind()
	if gvk != (schema.GroupVersionKind{Group: "admission.k8s.io", Version: "v1", Kind: "AdmissionReview"}) {
		http.Error(w, fmt.Sprintf("unsupported kind %s, want admission.k8s.io/v1 AdmissionReview", gvk), http.StatusBadRequest)
		return
	}
	out, err := h.ReviewObject(&in)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		klog.ErrorS(err, "writing admission response")
	}
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
