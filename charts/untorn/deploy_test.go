package chart_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/untorn/untorn/pkg/driver"
	"github.com/untorn/untorn/pkg/webhook"
)

// TestDeployManifestsUpToDate renders deploy/ again with
// hack/update-manifests.sh into a temporary directory and compares.
func TestDeployManifestsUpToDate(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(), "hack", "update-manifests.sh"), out)
	cmd.Env = append(os.Environ(), "HELM="+helm(t))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/update-manifests.sh: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("hack/update-manifests.sh rendered nothing")
	}
	for _, f := range files {
		want, _ := os.ReadFile(f)
		committed := filepath.Join(repoRoot(), "deploy", filepath.Base(f))
		got, err := os.ReadFile(committed)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("deploy/%s is not what the chart renders (%v); run hack/update-manifests.sh", filepath.Base(f), err)
		}
		// The committed manifests decode strictly too.
		objs := decodeAll(t, want)
		if !rendered(objs).has("Namespace", namespace) {
			t.Errorf("deploy/%s does not create namespace %s", filepath.Base(f), namespace)
		}
	}
}

type example struct {
	file, class, unit, libc string
	args                    []string
	volumes                 int
	// dirs: environment variable naming a directory -> the claim it must be on.
	dirs map[string]string
}

func TestExamples(t *testing.T) {
	classes := map[string]*storagev1.StorageClass{}
	for _, o := range render(t).all("StorageClass") {
		sc := o.(*storagev1.StorageClass)
		classes[sc.Name] = sc
	}
	for _, ex := range []example{
		{file: "postgres.yaml", class: "untorn-xfs", unit: "8192", libc: "glibc", args: []string{"full_page_writes=off"}, volumes: 2,
			dirs: map[string]string{"PGDATA": "data", "POSTGRES_INITDB_WALDIR": "wal"}},
		{file: "mariadb.yaml", class: "untorn-ext4-16k", unit: "16384", libc: "glibc", args: []string{"--innodb-doublewrite=OFF", "--innodb-page-size=16384"}, volumes: 2,
			dirs: map[string]string{"MARIADB_DATADIR": "data"}},
	} {
		t.Run(ex.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "examples", ex.file))
			if err != nil {
				t.Fatal(err)
			}
			var sts *appsv1.StatefulSet
			for _, o := range decodeAll(t, raw) {
				if s, ok := o.Obj.(*appsv1.StatefulSet); ok {
					sts = s
				}
			}
			if sts == nil {
				t.Fatal("no StatefulSet")
			}
			checkExample(t, ex, sts, classes)
		})
	}
}

func checkExample(t *testing.T, ex example, sts *appsv1.StatefulSet, classes map[string]*storagev1.StorageClass) {
	t.Helper()
	tpl := sts.Spec.Template
	if tpl.Labels[webhook.InjectLabel] != "true" {
		t.Errorf("pod template lacks %s=true", webhook.InjectLabel)
	}
	if tpl.Annotations[webhook.UnitAnnotation] != ex.unit || tpl.Annotations[webhook.LibcAnnotation] != ex.libc {
		t.Errorf("annotations %v, want unit %s libc %s", tpl.Annotations, ex.unit, ex.libc)
	}
	db := &tpl.Spec.Containers[0]
	requireArgs(t, db, ex.args...)
	for _, e := range db.Env {
		if claim, ok := ex.dirs[e.Name]; ok && !onClaim(db, claim, e.Value) {
			t.Errorf("%s=%s is not on the %s volume", e.Name, e.Value, claim)
		}
	}

	if len(sts.Spec.VolumeClaimTemplates) != ex.volumes {
		t.Fatalf("%d volume claim templates, want %d", len(sts.Spec.VolumeClaimTemplates), ex.volumes)
	}
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		name := pvc.Spec.StorageClassName
		if name == nil || *name != ex.class {
			t.Errorf("claim %s uses class %v, want %s", pvc.Name, name, ex.class)
			continue
		}
		sc, ok := classes[*name]
		if !ok {
			t.Errorf("claim %s: class %s is not in the chart's defaults", pvc.Name, *name)
			continue
		}
		params, err := driver.ValidateCreateParameters(sc.Parameters)
		if err != nil {
			t.Fatal(err)
		}
		// The class must be atomic for at least the database page.
		if len(params[driver.ParamAtomicWriteUnit]) == 0 || atoi(params[driver.ParamAtomicWriteUnit]) < atoi(ex.unit) ||
			params[driver.ParamAtomicPolicy] != "require" {
			t.Errorf("class %s gives %v, the database needs unit %s required", *name, params, ex.unit)
		}
		if !mountsClaim(db, pvc.Name) {
			t.Errorf("claim %s is not mounted in %s", pvc.Name, db.Name)
		}
	}

	// The webhook injects into this pod template without complaint.
	pod := &corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec}
	ops, err := webhook.DefaultConfig().Patch(pod)
	if err != nil || len(ops) == 0 {
		t.Errorf("webhook patch: %d operations, %v", len(ops), err)
	}
}

func mountsClaim(c *corev1.Container, name string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return true
		}
	}
	return false
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// onClaim reports whether path lies on the volume of claim in c.
func onClaim(c *corev1.Container, claim, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == claim && strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}
