package examples

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCloudNativePGExample validates cloudnative-pg.yaml against
// CloudNativePG's Cluster schema (testdata, and the whole CRD when
// UNTORN_CRD_DIR is set) and checks what untorn needs of it: the shim's
// label and annotations on the pods, full_page_writes off, the io_method
// the shim was proven to protect, data and WAL on atomic classes.
func TestCloudNativePGExample(t *testing.T) {
	const file = "cloudnative-pg.yaml"
	c := object(t, file, "Cluster")
	schemas := []crdSchema{loadSchema(t, "cnpg-cluster.schema.yaml")}
	if full, ok := fullCRD(t, "Cluster"); ok {
		schemas = append(schemas, full)
	}
	for _, s := range schemas {
		for _, e := range validate(c, s) {
			t.Errorf("%s does not validate against the Cluster schema: %s", file, e)
		}
	}
	checkShimMetadata(t, get(c, "spec", "inheritedMetadata"), "8192")
	params := get(c, "spec", "postgresql", "parameters")
	if got := str(get(params, "full_page_writes")); got != "off" {
		t.Errorf("full_page_writes is %q, want \"off\"", got)
	}
	if got := str(get(params, "io_method")); got != "worker" {
		t.Errorf("io_method is %q, want worker (the method set in docs/operators.md)", got)
	}
	if img := str(get(c, "spec", "imageName")); !strings.Contains(img, ":18") {
		t.Errorf("imageName %q is not PostgreSQL 18: io_method exists from 18 on", img)
	}
	classes := storageClasses(t)
	checkClass(t, classes, "storage", str(get(c, "spec", "storage", "storageClass")), 8192)
	checkClass(t, classes, "walStorage", str(get(c, "spec", "walStorage", "storageClass")), 8192)
}

// TestMariaDBOperatorExample validates mariadb-operator.yaml against
// mariadb-operator's MariaDB schema and checks the shim's pod metadata,
// innodb_doublewrite=OFF in its my.cnf and the class.
func TestMariaDBOperatorExample(t *testing.T) {
	const file = "mariadb-operator.yaml"
	m := object(t, file, "MariaDB")
	schemas := []crdSchema{loadSchema(t, "mariadb.schema.yaml")}
	if full, ok := fullCRD(t, "MariaDB"); ok {
		schemas = append(schemas, full)
	}
	for _, s := range schemas {
		for _, e := range validate(m, s) {
			t.Errorf("%s does not validate against the MariaDB schema: %s", file, e)
		}
	}
	checkShimMetadata(t, get(m, "spec", "podMetadata"), "16384")
	cnf := myCnf(str(get(m, "spec", "myCnf")))
	if got := cnf["innodb_doublewrite"]; !strings.EqualFold(got, "OFF") && got != "0" {
		t.Errorf("myCnf: innodb_doublewrite is %q, want OFF", got)
	}
	if ps, ok := cnf["innodb_page_size"]; ok && parseUnit(ps) != 16384 && ps != "16k" {
		t.Errorf("myCnf: innodb_page_size %q does not match the 16384-byte unit", ps)
	}
	checkClass(t, storageClasses(t), "storage", str(get(m, "spec", "storage", "storageClassName")), 16384)
	// The root password the MariaDB resource names is in the file.
	ref := get(m, "spec", "rootPasswordSecretKeyRef")
	secret := object(t, file, "Secret")
	if get(secret, "stringData", str(get(ref, "key"))) == nil || str(get(secret, "metadata", "name")) != str(get(ref, "name")) {
		t.Errorf("rootPasswordSecretKeyRef %v names no key of the Secret in %s", ref, file)
	}
}

// myCnf reads the [mariadb]/[mysqld] options of a my.cnf (dashes and
// underscores are the same to the server).
func myCnf(s string) map[string]string {
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		case section == "mariadb" || section == "mysqld" || section == "server":
			k, v, _ := strings.Cut(line, "=")
			out[strings.ReplaceAll(strings.TrimSpace(k), "-", "_")] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestSchemaValidatorRejects proves the validator catches the mistakes a
// hand-edited example makes: a misspelt field, a wrong type, a value outside
// an enum or below a minimum, a missing required field, a bad quantity.
func TestSchemaValidatorRejects(t *testing.T) {
	s := loadSchema(t, "cnpg-cluster.schema.yaml")
	base := object(t, "cloudnative-pg.yaml", "Cluster")
	if errs := validate(base, s); len(errs) != 0 {
		t.Fatalf("the example itself fails: %v", errs)
	}
	for _, tc := range []struct {
		name   string
		mutate func(spec map[string]any)
		want   string // a fragment of the path in the error
	}{
		{"misspelt storageClassName", func(sp map[string]any) {
			st := sp["storage"].(map[string]any)
			st["storageClassName"] = st["storageClass"]
		}, "Cluster.spec.storage.storageClassName"},
		{"instances as a string", func(sp map[string]any) { sp["instances"] = "3" }, "Cluster.spec.instances"},
		{"instances below the minimum", func(sp map[string]any) { sp["instances"] = 0.0 }, "Cluster.spec.instances"},
		{"enum", func(sp map[string]any) { sp["primaryUpdateStrategy"] = "sometimes" }, "Cluster.spec.primaryUpdateStrategy"},
		{"parameter not a string", func(sp map[string]any) {
			sp["postgresql"].(map[string]any)["parameters"].(map[string]any)["max_connections"] = 100.0
		}, "Cluster.spec.postgresql.parameters.max_connections"},
		{"missing required", func(sp map[string]any) { delete(sp, "instances") }, "required field \"instances\""},
		{"bad quantity", func(sp map[string]any) {
			sp["resources"].(map[string]any)["requests"].(map[string]any)["memory"] = "lots"
		}, "Cluster.spec.resources.requests.memory"},
		{"labels not strings", func(sp map[string]any) {
			sp["inheritedMetadata"].(map[string]any)["labels"].(map[string]any)["untorn.csi.dev/inject"] = true
		}, "Cluster.spec.inheritedMetadata.labels.untorn.csi.dev/inject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := deepCopy(t, base)
			tc.mutate(obj["spec"].(map[string]any))
			errs := validate(obj, s)
			if !strings.Contains(strings.Join(errs, "\n"), tc.want) {
				t.Errorf("want an error naming %q, got %v", tc.want, errs)
			}
		})
	}
}

func deepCopy(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
