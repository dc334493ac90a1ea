package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// statsDir is where the shim writes its counters in the examples' pods.
const statsDir = "/tmp"

// readManifest reads the objects of a YAML (or JSON) manifest, the items
// of a List among them.
func readManifest(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			if err := u.EachListItem(func(o runtime.Object) error {
				objs = append(objs, o.(*unstructured.Unstructured))
				return nil
			}); err != nil {
				return nil, err
			}
			continue
		}
		objs = append(objs, u)
	}
}

// prepareStatefulSets sets UNTORN_STATS_DIR in every container of every
// StatefulSet (for the shim counters), then passes each StatefulSet
// through filter (nil: unchanged).
func prepareStatefulSets(objs []*unstructured.Unstructured, filter func(*appsv1.StatefulSet)) error {
	for i, u := range objs {
		if u.GetKind() != "StatefulSet" {
			continue
		}
		var s appsv1.StatefulSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s); err != nil {
			return fmt.Errorf("StatefulSet %s: %w", u.GetName(), err)
		}
		for j := range s.Spec.Template.Spec.Containers {
			c := &s.Spec.Template.Spec.Containers[j]
			c.Env = append(c.Env, corev1.EnvVar{Name: "UNTORN_STATS_DIR", Value: statsDir})
		}
		if filter != nil {
			filter(&s)
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&s)
		if err != nil {
			return err
		}
		// the converter adds an empty status and creation timestamp
		delete(m, "status")
		objs[i] = &unstructured.Unstructured{Object: m}
	}
	return nil
}

// applyExample creates the objects of an example manifest in the
// namespace, its StatefulSets prepared by prepareStatefulSets; what was
// applied is kept in the evidence directory as <namespace>-<file>.json.
func (e *env) applyExample(ctx context.Context, file string, filter func(*appsv1.StatefulSet)) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	objs, err := readManifest(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := prepareStatefulSets(objs, filter); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}
	js, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if e.cfg.evidence != "" {
		name := fmt.Sprintf("%s-%s.json", e.ns, strings.TrimSuffix(filepath.Base(file), filepath.Ext(file)))
		if err := os.WriteFile(filepath.Join(e.cfg.evidence, name), js, 0o644); err != nil {
			return err
		}
	}
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		m, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err)
		}
		r := e.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			u.SetNamespace(e.ns)
			_, err = r.Namespace(e.ns).Create(ctx, u, metav1.CreateOptions{})
		} else {
			_, err = r.Create(ctx, u, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("create %s %s: %w", strings.ToLower(gvk.Kind), u.GetName(), err)
		}
		fmt.Printf("%s/%s created\n", strings.ToLower(gvk.GroupKind().String()), u.GetName())
	}
	return nil
}

// withoutIOMethod drops every "-c io_method=..." pair from a server's
// arguments (PostgreSQL before 18 does not know the parameter); an
// io_method= not preceded by -c stays.
func withoutIOMethod(args []string) []string {
	var out []string
	for _, a := range args {
		if strings.HasPrefix(a, "io_method=") && len(out) > 0 && out[len(out)-1] == "-c" {
			out = out[:len(out)-1]
			continue
		}
		out = append(out, a)
	}
	return out
}

// postgres15 runs the example's first container on image without the
// io_method arguments.
func postgres15(image string) func(*appsv1.StatefulSet) {
	return func(s *appsv1.StatefulSet) {
		c := &s.Spec.Template.Spec.Containers[0]
		c.Image = image
		c.Args = withoutIOMethod(c.Args)
	}
}

// classInstead puts the claim templates of class from on class to.
func classInstead(from, to string) func(*appsv1.StatefulSet) {
	return func(s *appsv1.StatefulSet) {
		for i := range s.Spec.VolumeClaimTemplates {
			if sc := s.Spec.VolumeClaimTemplates[i].Spec.StorageClassName; sc != nil && *sc == from {
				s.Spec.VolumeClaimTemplates[i].Spec.StorageClassName = &to
			}
		}
	}
}
