package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/klog/v2"
)

// MaxReviewBytes bounds a request body. The API server takes objects of at
// most 3 MiB, and an AdmissionReview of a pod carries the pod and, on an
// update, the old pod too.
const MaxReviewBytes = 6 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handler answers AdmissionReview requests for pods.
type Handler struct {
	Config Config
}

// NewHandler returns a handler injecting according to cfg.
func NewHandler(cfg Config) *Handler {
	return &Handler{Config: cfg}
}

// Review answers one AdmissionReview. Requests for other resources and
// operations are allowed unchanged. A pod it is sent (pod creation, or
// ephemeral containers added to a pod) is decoded as the API server decodes
// it; an opted-in pod is denied when its annotations are invalid, when it
// would not run the shim in every container, or when it cannot be decoded
// (the webhook is only sent opted-in pods, and cannot tell that one is safe).
func (h *Handler) Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podResource {
		return resp
	}
	ephemeralOnly := false
	switch {
	case req.SubResource == "" && (req.Operation == admissionv1.Create || req.Operation == ""):
	case req.SubResource == "ephemeralcontainers" && req.Operation == admissionv1.Update:
		// kubectl debug: only the ephemeral containers can change here.
		ephemeralOnly = true
	default:
		return resp
	}
	var pod corev1.Pod
	if err := utiljson.Unmarshal(req.Object.Raw, &pod); err != nil {
		klog.InfoS("denying undecodable pod", "namespace", req.Namespace, "uid", req.UID, "err", err)
		return deny(resp, fmt.Errorf("cannot decode the pod: %w", err))
	}
	ops, err := h.Config.Patch(&pod)
	if err != nil {
		klog.InfoS("denying pod that would not run the shim", "namespace", req.Namespace, "pod", podName(&pod), "err", err)
		return deny(resp, err)
	}
	if ephemeralOnly {
		ops = slices.DeleteFunc(ops, func(op PatchOperation) bool {
			return !strings.HasPrefix(op.Path, "/spec/ephemeralContainers/")
		})
	}
	if len(ops) == 0 {
		return resp
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(resp, err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	klog.V(4).InfoS("injecting shim", "namespace", req.Namespace, "pod", podName(&pod))
	return resp
}

func deny(resp *admissionv1.AdmissionResponse, err error) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusBadRequest,
		Reason:  metav1.StatusReasonInvalid,
		Message: err.Error(),
	}
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
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, fmt.Sprintf("Content-Type %q: send application/json", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	if r.ContentLength > MaxReviewBytes {
		tooLarge(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(w)
			return
		}
		// A read that timed out or a client that went away: the server
		// closes the connection after this answer.
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("reading the request body: %v", err), http.StatusBadRequest)
		return
	}
	var in admissionv1.AdmissionReview
	if err := utiljson.Unmarshal(body, &in); err != nil {
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

func tooLarge(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("request body larger than %d bytes", MaxReviewBytes), http.StatusRequestEntityTooLarge)
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
