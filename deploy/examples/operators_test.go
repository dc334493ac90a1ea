// Package examples holds the tests of the example manifests in
// deploy/examples.
package examples

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/untorn/untorn/pkg/webhook"
)

// crdSchema is the structural schema of one custom resource kind.
type crdSchema struct {
	Group, Kind, Version string
	Schema               map[string]any
}

// loadSchema reads a schema file of testdata/ (see testdata/README.md).
func loadSchema(t *testing.T, name string) crdSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Group, Kind, Version string
		OpenAPIV3Schema      map[string]any `json:"openAPIV3Schema"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if doc.Kind == "" || doc.OpenAPIV3Schema == nil {
		t.Fatalf("%s: no kind or openAPIV3Schema", name)
	}
	return crdSchema{doc.Group, doc.Kind, doc.Version, doc.OpenAPIV3Schema}
}

// fullCRD reads the operator's own CRD for kind from $UNTORN_CRD_DIR when
// that is set (the files named in testdata/README.md), so the examples can
// be checked against the whole published schema too; ok is false without it.
func fullCRD(t *testing.T, kind string) (crdSchema, bool) {
	t.Helper()
	dir := os.Getenv("UNTORN_CRD_DIR")
	if dir == "" {
		return crdSchema{}, false
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Group    string
				Names    struct{ Kind string }
				Versions []struct {
					Name    string
					Storage bool
					Schema  struct {
						OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
					}
				}
			}
		}
		if yaml.Unmarshal(b, &crd) != nil || crd.Spec.Names.Kind != kind {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if v.Storage {
				return crdSchema{crd.Spec.Group, kind, v.Name, v.Schema.OpenAPIV3Schema}, true
			}
		}
	}
	t.Fatalf("UNTORN_CRD_DIR=%s holds no CRD of kind %s", dir, kind)
	return crdSchema{}, false
}

// docs splits a manifest file into its objects.
func docs(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		var obj map[string]any
		if err := yaml.Unmarshal(d, &obj); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if obj != nil {
			out = append(out, obj)
		}
	}
	return out
}

// validate checks obj against s: apiVersion and kind, metadata.name, and the
// rest against the schema (metadata is the API server's, not the CRD's).
func validate(obj map[string]any, s crdSchema) []string {
	var errs []string
	if av := s.Group + "/" + s.Version; obj["apiVersion"] != av {
		errs = append(errs, "apiVersion is "+str(obj["apiVersion"])+", the CRD serves "+av)
	}
	if name, _ := get(obj, "metadata", "name").(string); name == "" {
		errs = append(errs, "metadata.name is missing")
	}
	rest := map[string]any{}
	for k, v := range obj {
		if k != "metadata" {
			rest[k] = v
		}
	}
	rest["metadata"] = map[string]any{}
	return append(errs, validateSchema(s.Kind, rest, s.Schema)...)
}

// get walks nested maps.
func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// object returns the single object of kind in file.
func object(t *testing.T, file, kind string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, o := range docs(t, file) {
		if o["kind"] == kind {
			if found != nil {
				t.Fatalf("%s: more than one %s", file, kind)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("%s: no %s", file, kind)
	}
	return found
}

// storageClasses are the classes the rendered chart (deploy/untorn.yaml)
// creates.
func storageClasses(t *testing.T) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range docs(t, "../untorn.yaml") {
		if o["kind"] == "StorageClass" {
			out[str(get(o, "metadata", "name"))] = o
		}
	}
	if len(out) == 0 {
		t.Fatal("deploy/untorn.yaml creates no StorageClass")
	}
	return out
}

// checkShimMetadata checks the labels and annotations an operator copies to
// its pods: the webhook's opt-in label, a libc it knows and the unit.
func checkShimMetadata(t *testing.T, meta any, unit string) {
	t.Helper()
	if got := str(get(meta, "labels", webhook.InjectLabel)); got != "true" {
		t.Errorf("pod labels: %s is %q, want \"true\" (the webhook injects the shim only then)", webhook.InjectLabel, got)
	}
	if got := str(get(meta, "annotations", webhook.LibcAnnotation)); got != "glibc" {
		t.Errorf("pod annotations: %s is %q, want glibc (the operand image is glibc-based)", webhook.LibcAnnotation, got)
	}
	if got := str(get(meta, "annotations", webhook.UnitAnnotation)); got != unit {
		t.Errorf("pod annotations: %s is %q, want %q (the page size)", webhook.UnitAnnotation, got, unit)
	}
}

// checkClass checks that a volume uses a class of the chart that requires
// atomic writes of at least unit bytes.
func checkClass(t *testing.T, classes map[string]map[string]any, what, name string, unit int64) {
	t.Helper()
	c, ok := classes[name]
	if !ok {
		t.Errorf("%s: storage class %q is not one the chart creates (%v)", what, name, sortedKeys(anyMap(classes)))
		return
	}
	if p := str(get(c, "parameters", "atomicPolicy")); p != "require" {
		t.Errorf("%s: class %s has atomicPolicy %q; torn-page protection may be off only with require", what, name, p)
	}
	if u := parseUnit(str(get(c, "parameters", "atomicWriteUnit"))); u < unit {
		t.Errorf("%s: class %s gives %d-byte atomic writes, the database writes %d-byte pages", what, name, u, unit)
	}
}

func anyMap(m map[string]map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// parseUnit reads "16Ki" or "8192".
func parseUnit(s string) int64 {
	mult := int64(1)
	if strings.HasSuffix(s, "Ki") {
		mult, s = 1024, strings.TrimSuffix(s, "Ki")
	}
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n * mult
}
