package chart_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"
)

const (
	release   = "untorn"
	namespace = "untorn-system"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm returns the pinned helm binary: $HELM, or the one hack/lib/helm.sh
// builds into the cache.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if h := os.Getenv("HELM"); h != "" {
			helmPath = h
			return
		}
		var out, stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(repoRoot(), "hack", "lib", "helm.sh"))
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if helmErr = cmd.Run(); helmErr != nil {
			helmErr = fmt.Errorf("hack/lib/helm.sh: %v\n%s", helmErr, stderr.String())
			return
		}
		helmPath = strings.TrimSpace(out.String())
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// object is one rendered manifest, decoded strictly into its type.
type object struct {
	Kind, Name, Namespace string
	Obj                   any
}

// newTyped returns an empty object of the k8s.io/api type for apiVersion and
// kind, or nil when the kind is not one of Kubernetes' own.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "storage.k8s.io/v1/CSIDriver":
		return &storagev1.CSIDriver{}
	case "storage.k8s.io/v1/StorageClass":
		return &storagev1.StorageClass{}
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}
	case "admissionregistration.k8s.io/v1/MutatingWebhookConfiguration":
		return &admissionregistrationv1.MutatingWebhookConfiguration{}
	}
	return nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeAll splits a multi-document YAML stream and decodes every document
// strictly: an unknown or misspelt field fails. Kinds outside k8s.io/api
// (cert-manager's) are decoded into maps and returned with Obj of type
// map[string]any.
func decodeAll(t *testing.T, manifests []byte) []object {
	t.Helper()
	var objs []object
	for _, doc := range docSep.Split(string(manifests), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("decode document: %v\n%s", err, doc)
		}
		if meta.Kind == "" || meta.APIVersion == "" || meta.Metadata.Name == "" {
			t.Fatalf("document without apiVersion, kind or name:\n%s", doc)
		}
		obj := newTyped(meta.APIVersion, meta.Kind)
		if obj == nil {
			if !strings.HasPrefix(meta.APIVersion, "cert-manager.io/") {
				t.Fatalf("unexpected kind %s %s", meta.APIVersion, meta.Kind)
			}
			m := map[string]any{}
			obj = &m
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("strict decode of %s %s: %v", meta.Kind, meta.Metadata.Name, err)
		}
		if m, ok := obj.(*map[string]any); ok {
			obj = *m
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, Obj: obj})
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// template runs helm template on the chart with args and returns its
// output and error.
func template(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	full := append([]string{"template", release, ".", "--namespace", namespace}, args...)
	cmd := exec.Command(helm(t), full...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.Bytes(), fmt.Errorf("helm %s: %w", strings.Join(full, " "), err)
	}
	return out.Bytes(), nil
}

// render renders the chart with args and decodes every object strictly.
func render(t *testing.T, args ...string) rendered {
	t.Helper()
	out, err := template(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return rendered(decodeAll(t, out))
}

type rendered []object

func (r rendered) find(t *testing.T, kind, name string) any {
	t.Helper()
	for _, o := range r {
		if o.Kind == kind && o.Name == name {
			return o.Obj
		}
	}
	t.Fatalf("no %s %q rendered", kind, name)
	return nil
}

func (r rendered) has(kind, name string) bool {
	for _, o := range r {
		if o.Kind == kind && o.Name == name {
			return true
		}
	}
	return false
}

func (r rendered) all(kind string) []any {
	var out []any
	for _, o := range r {
		if o.Kind == kind {
			out = append(out, o.Obj)
		}
	}
	return out
}

func (r rendered) daemonSet(t *testing.T) *appsv1.DaemonSet {
	return r.find(t, "DaemonSet", release+"-node").(*appsv1.DaemonSet)
}

func (r rendered) deployment(t *testing.T, name string) *appsv1.Deployment {
	return r.find(t, "Deployment", name).(*appsv1.Deployment)
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q in pod spec (have %v)", name, containerNames(spec))
	return nil
}

func containerNames(spec *corev1.PodSpec) []string {
	var n []string
	for _, c := range spec.Containers {
		n = append(n, c.Name)
	}
	return n
}

func hasArg(c *corev1.Container, arg string) bool {
	for _, a := range c.Args {
		if a == arg {
			return true
		}
	}
	return false
}

func requireArgs(t *testing.T, c *corev1.Container, args ...string) {
	t.Helper()
	for _, a := range args {
		if !hasArg(c, a) {
			t.Errorf("container %s: missing argument %q in %q", c.Name, a, c.Args)
		}
	}
}

func mount(c *corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}
