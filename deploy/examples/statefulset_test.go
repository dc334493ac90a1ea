package examples

import (
	"bytes"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// dbExample is what a database StatefulSet example must hold for untorn:
// the image the e2e builds, the data directory of the startup check on the
// atomic data volume, the second volume (WAL, redo log) where the server
// writes it, the torn-page defence off and, for PostgreSQL 18, the io_method
// proven protected.
type dbExample struct {
	file     string
	imageVar string // the variable of hack/cluster/lib.sh naming the e2e image
	page     int64
	dataVar  string // the data directory the guard probes the parent of
	// logDir returns where the server writes its log (WAL, redo) according to
	// the container's env and args
	logDir   func(env map[string]string, args []string) string
	logClaim string // the volume claim that must hold it
	want     [][]string
}

var dbExamples = []dbExample{
	{
		file: "postgres.yaml", imageVar: "POSTGRES_IMAGE", page: 8192, dataVar: "PGDATA",
		logDir:   func(env map[string]string, _ []string) string { return env["POSTGRES_INITDB_WALDIR"] },
		logClaim: "wal",
		want:     [][]string{{"-c", "full_page_writes=off"}, {"-c", "io_method=worker"}},
	},
	{
		file: "mariadb.yaml", imageVar: "MARIADB_IMAGE", page: 16384, dataVar: "MARIADB_DATADIR",
		logDir:   func(_ map[string]string, args []string) string { return flagValue(args, "--innodb-log-group-home-dir") },
		logClaim: "redo",
		want:     [][]string{{"--innodb-doublewrite=OFF"}, {"--innodb-page-size=16384"}},
	},
}

// TestDatabaseExamples checks the PostgreSQL and MariaDB StatefulSets
// against the images the e2e builds and against what their startup check
// relies on.
func TestDatabaseExamples(t *testing.T) {
	classes := storageClasses(t)
	for _, ex := range dbExamples {
		t.Run(ex.file, func(t *testing.T) {
			sts := statefulSet(t, ex.file)
			c := sts.Spec.Template.Spec.Containers[0]

			// The e2e imports its own build under the name the example pulls
			// (imagePullPolicy IfNotPresent, no registry): a version bumped
			// on one side only would leave the pod in ErrImagePull.
			if want, got := e2eImage(t, ex.imageVar), fullImageName(c.Image); got != want {
				t.Errorf("image %s (%s) is not the e2e's %s=%s (hack/cluster/lib.sh)", c.Image, got, ex.imageVar, want)
			}
			for _, w := range ex.want {
				if !hasSeq(c.Args, w) {
					t.Errorf("args %q do not contain %q", c.Args, w)
				}
			}
			if hasSeq(c.Args, []string{"-c", "io_method=worker"}) && imageMajor(c.Image) < 18 {
				t.Errorf("io_method is set but image %s is PostgreSQL %d: versions before 18 refuse to start with it", c.Image, imageMajor(c.Image))
			}

			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			mounts := map[string]string{} // claim -> mount path
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			// The guard writes its probe page in the parent of the data
			// directory, which must be the data volume's mount itself (not a
			// directory the server creates later, not another volume).
			data := env[ex.dataVar]
			if data == "" {
				t.Fatalf("%s is not set in the container's env", ex.dataVar)
			}
			if path.Dir(path.Clean(data)) != mounts["data"] {
				t.Errorf("%s=%s: its parent is not the data volume's mount %q (the startup check probes there)", ex.dataVar, data, mounts["data"])
			}
			if dd := flagValue(c.Args, "--datadir"); dd != "" && dd != data {
				t.Errorf("--datadir=%s differs from %s=%s", dd, ex.dataVar, data)
			}
			if ld := ex.logDir(env, c.Args); ld == "" || !under(ld, mounts[ex.logClaim]) {
				t.Errorf("the server's log directory %q is not on the %s volume (mounted at %q)", ld, ex.logClaim, mounts[ex.logClaim])
			}

			for _, vct := range sts.Spec.VolumeClaimTemplates {
				if _, ok := mounts[vct.Name]; !ok {
					t.Errorf("volume claim %s is not mounted in the container", vct.Name)
				}
				checkClass(t, classes, "volumeClaimTemplate "+vct.Name, classOf(vct), ex.page)
			}
			for _, name := range []string{"data", ex.logClaim} {
				if !hasClaim(sts, name) {
					t.Errorf("no volume claim template %s", name)
				}
			}
		})
	}
}

// statefulSet returns the StatefulSet of an example file.
func statefulSet(t *testing.T, file string) appsv1.StatefulSet {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var sts appsv1.StatefulSet
		if err := yaml.UnmarshalStrict(doc, &sts); err == nil && sts.Kind == "StatefulSet" {
			if len(sts.Spec.Template.Spec.Containers) == 0 {
				t.Fatalf("%s: the StatefulSet has no container", file)
			}
			return sts
		}
	}
	t.Fatalf("%s has no StatefulSet", file)
	return appsv1.StatefulSet{}
}

// e2eImage reads the default of an image variable in hack/cluster/lib.sh.
func e2eImage(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("../../hack/cluster/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `=\$\{` + name + `:-([^}]+)\}$`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("hack/cluster/lib.sh does not set %s", name)
	}
	return string(m[1])
}

// fullImageName is the name a container runtime pulls for a Docker Hub
// short name: postgres:18 is docker.io/library/postgres:18.
func fullImageName(img string) string {
	first, _, found := strings.Cut(img, "/")
	switch {
	case !found:
		return "docker.io/library/" + img
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		return "docker.io/" + img
	}
	return img
}

// imageMajor is the major version in an image tag (postgres:18.1 is 18), 0
// when there is none.
func imageMajor(img string) int {
	i := strings.LastIndex(img, ":")
	if i < 0 || strings.Contains(img[i:], "/") {
		return 0
	}
	n := 0
	for _, c := range img[i+1:] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func hasSeq(args, seq []string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		if strings.Join(args[i:i+len(seq)], "\x00") == strings.Join(seq, "\x00") {
			return true
		}
	}
	return false
}

// flagValue is the value of --name=value or --name_with_underscores=value.
func flagValue(args []string, name string) string {
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if ok && strings.ReplaceAll(k, "_", "-") == name {
			return v
		}
	}
	return ""
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	if dir == "" {
		return false
	}
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func classOf(pvc corev1.PersistentVolumeClaim) string {
	if pvc.Spec.StorageClassName == nil {
		return ""
	}
	return *pvc.Spec.StorageClassName
}

func hasClaim(sts appsv1.StatefulSet, name string) bool {
	for _, v := range sts.Spec.VolumeClaimTemplates {
		if v.Name == name {
			return true
		}
	}
	return false
}
