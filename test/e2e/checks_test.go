package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func capacity(class, node, q string) storagev1.CSIStorageCapacity {
	c := storagev1.CSIStorageCapacity{StorageClassName: class}
	if node != "" {
		c.NodeTopology = &metav1.LabelSelector{MatchLabels: map[string]string{"topology.untorn.csi.dev/node": node}}
	}
	if q != "" {
		v := resource.MustParse(q)
		c.Capacity = &v
	}
	return c
}

func TestPlacementCapacity(t *testing.T) {
	const node = "untorn-node"
	good := []storagev1.CSIStorageCapacity{
		capacity("untorn-ext4-16k", node, "0"),
		capacity("untorn-xfs-hw", node, ""), // no capacity counts as 0
		capacity("untorn-xfs", node, "20Gi"),
		capacity("untorn-xfs-hw", "other-node", "20Gi"),
		capacity("untorn-xfs", "", "20Gi"),
	}
	per := capacityPerClass(good, node)
	if want := map[string]string{"untorn-ext4-16k": "0", "untorn-xfs-hw": "0", "untorn-xfs": "20Gi"}; !mapsEqual(per, want) {
		t.Fatalf("capacityPerClass = %v, want %v", per, want)
	}
	if !placementCapacityOK(per) {
		t.Errorf("placement refused %v", per)
	}
	bad := map[string][]storagev1.CSIStorageCapacity{
		"hardware class with capacity": {capacity("untorn-ext4-16k", node, "1Gi"), capacity("untorn-xfs-hw", node, "0"), capacity("untorn-xfs", node, "1Gi")},
		"software class without":       {capacity("untorn-ext4-16k", node, "0"), capacity("untorn-xfs-hw", node, "0"), capacity("untorn-xfs", node, "0")},
		"hardware class missing":       {capacity("untorn-ext4-16k", node, "0"), capacity("untorn-xfs", node, "1Gi")},
		"only on another node":         {capacity("untorn-ext4-16k", "n2", "0"), capacity("untorn-xfs-hw", "n2", "0"), capacity("untorn-xfs", "n2", "1Gi")},
	}
	for name, caps := range bad {
		if per := capacityPerClass(caps, node); placementCapacityOK(per) {
			t.Errorf("%s: placement accepted %v", name, per)
		}
	}
	// the last object of a class counts, as it did in the shell check
	last := capacityPerClass([]storagev1.CSIStorageCapacity{capacity("untorn-xfs", node, "1Gi"), capacity("untorn-xfs", node, "0")}, node)
	if last["untorn-xfs"] != "0" {
		t.Errorf("two objects of a class: %v", last)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestNewNames(t *testing.T) {
	got := newNames([]string{"a.img", "b.img"}, []string{"c.img", "a.img", "b.img", "0.img"})
	if want := []string{"0.img", "c.img"}; !slices.Equal(got, want) {
		t.Errorf("newNames = %v, want %v", got, want)
	}
	if got := newNames([]string{"a.img"}, []string{"a.img"}); len(got) != 0 {
		t.Errorf("nothing new: %v", got)
	}
}

func TestImageFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"v1.img", "v2.img", "v1.img.tmp", "notes"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "d.img"), 0o755); err != nil {
		t.Fatal(err)
	}
	all, err := imageFiles(dir, false)
	if err != nil || !slices.Equal(all, []string{"d.img", "v1.img", "v2.img"}) {
		t.Errorf("imageFiles(any) = %v, %v", all, err)
	}
	reg, err := imageFiles(dir, true)
	if err != nil || !slices.Equal(reg, []string{"v1.img", "v2.img"}) {
		t.Errorf("imageFiles(regular) = %v, %v", reg, err)
	}
	if none, err := imageFiles(filepath.Join(dir, "missing"), true); err != nil || len(none) != 0 {
		t.Errorf("missing dir: %v, %v", none, err)
	}
}

func TestVerifiedAtomic(t *testing.T) {
	tests := []struct {
		out  string
		want bool
	}{
		{`{"atomic":true,"unit":8192,"fsType":"xfs","unitMin":4096}`, true},
		{`{"atomic":true,"unit":65536,"fsType":"xfs"}`, true},
		{`{"atomic":false,"unit":8192,"fsType":"xfs","reason":"no"}`, false},
		{`{"atomic":true,"unit":4096,"fsType":"xfs"}`, false},
		{`{"atomic":true,"unit":8192,"fsType":"ext4"}`, false},
		{`{"atomic":true,"fsType":"xfs"}`, false},
		{`not json`, false},
	}
	for _, tt := range tests {
		if got := verifiedAtomic(tt.out, 8192, "xfs"); got != tt.want {
			t.Errorf("verifiedAtomic(%s) = %v, want %v", tt.out, got, tt.want)
		}
	}
}

func TestCSIMounts(t *testing.T) {
	left := []string{
		"/dev/loop3 /var/lib/kubelet/plugins/kubernetes.io/csi/untorn.csi.dev/abc/globalmount xfs rw 0 0",
		"/dev/loop3 /var/lib/kubelet/pods/0a-1b/volumes/kubernetes.io~csi/pvc-1/mount xfs rw 0 0",
	}
	for _, l := range left {
		if !csiMounts.MatchString(l) {
			t.Errorf("a CSI mount not seen: %s", l)
		}
	}
	for _, l := range []string{
		"tmpfs /var/lib/kubelet/pods/0a-1b/volumes/kubernetes.io~projected/kube-api-access-x tmpfs rw 0 0",
		"/dev/sda1 /var/lib/kubelet ext4 rw 0 0",
	} {
		if csiMounts.MatchString(l) {
			t.Errorf("not a CSI volume mount, but matched: %s", l)
		}
	}
}

func TestSameVersion(t *testing.T) {
	for _, ok := range [][2]string{{"18.6", "18"}, {"18", "18"}, {"11.8.9-MariaDB-1", "11.8"}, {"15.14", "15"}} {
		if !sameVersion(ok[0], ok[1]) {
			t.Errorf("sameVersion(%q, %q) = false", ok[0], ok[1])
		}
	}
	for _, no := range [][2]string{{"180.1", "18"}, {"17.5", "18"}, {"11.4.5-MariaDB", "11.8"}, {"11.80.1", "11.8"}} {
		if sameVersion(no[0], no[1]) {
			t.Errorf("sameVersion(%q, %q) = true", no[0], no[1])
		}
	}
	if majorVersion("18.1 (Debian 18.1-1)") != 18 || majorVersion("15.14") != 15 || majorVersion("devel") != -1 {
		t.Error("majorVersion")
	}
}

const manifest = `apiVersion: v1
kind: Secret
metadata: {name: pg}
stringData: {POSTGRES_PASSWORD: x}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres}
spec:
  serviceName: postgres
  selector: {matchLabels: {app: pg}}
  template:
    metadata: {labels: {app: pg}}
    spec:
      containers:
      - name: postgres
        image: docker.io/library/postgres:18
        args: ["-c", "full_page_writes=off", "-c", "io_method=worker", "io_method=keep"]
        env: [{name: A, value: b}]
      - name: side
        image: busybox
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: untorn-ext4-16k
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
  - metadata: {name: wal}
    spec:
      storageClassName: untorn-xfs
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
---
`

func TestPrepareStatefulSets(t *testing.T) {
	objs, err := readManifest([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("%d objects, want 2", len(objs))
	}
	filter := func(s *appsv1.StatefulSet) {
		postgres15("docker.io/library/postgres:15")(s)
		classInstead("untorn-ext4-16k", "untorn-xfs")(s)
	}
	if err := prepareStatefulSets(objs, filter); err != nil {
		t.Fatal(err)
	}
	if objs[0].GetKind() != "Secret" || objs[0].Object["stringData"] == nil {
		t.Errorf("the Secret changed: %v", objs[0].Object)
	}
	var s appsv1.StatefulSet
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[1].Object, &s); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Spec.Template.Spec.Containers {
		n := len(c.Env)
		if n == 0 || c.Env[n-1].Name != "UNTORN_STATS_DIR" || c.Env[n-1].Value != "/tmp" {
			t.Errorf("container %s env %v lacks UNTORN_STATS_DIR=/tmp", c.Name, c.Env)
		}
	}
	pg := s.Spec.Template.Spec.Containers[0]
	if pg.Image != "docker.io/library/postgres:15" || s.Spec.Template.Spec.Containers[1].Image != "busybox" {
		t.Errorf("images %s, %s", pg.Image, s.Spec.Template.Spec.Containers[1].Image)
	}
	if want := []string{"-c", "full_page_writes=off", "io_method=keep"}; !slices.Equal(pg.Args, want) {
		t.Errorf("args %q, want %q", pg.Args, want)
	}
	if pg.Env[0].Name != "A" {
		t.Errorf("the example's env is gone: %v", pg.Env)
	}
	var classes []string
	for _, v := range s.Spec.VolumeClaimTemplates {
		classes = append(classes, *v.Spec.StorageClassName)
	}
	if !slices.Equal(classes, []string{"untorn-xfs", "untorn-xfs"}) {
		t.Errorf("claim classes %v", classes)
	}
	if _, ok := objs[1].Object["status"]; ok {
		t.Error("a status is sent")
	}
}

func TestReadManifestList(t *testing.T) {
	objs, err := readManifest([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}`))
	if err != nil || len(objs) != 2 || objs[0].GetName() != "a" || objs[1].GetKind() != "Secret" {
		t.Fatalf("List: %v %v", objs, err)
	}
	if _, err := readManifest([]byte("kind: [")); err == nil {
		t.Error("bad YAML accepted")
	}
}

func TestShimDumps(t *testing.T) {
	dumps := `{"pid":10,"exe":"/usr/lib/postgresql/18/bin/postgres","why":"dump-now","atomic_writes":5,"atomic_bytes":40960,"uring_atomic":0,"aio_atomic":0,"write_errors":0,"strict_failures":0,"passthrough":{"unaligned":2,"fs_not_atomic":1}}
{"pid":11,"exe":"/usr/lib/postgresql/18/bin/postgres","why":"exit","atomic_writes":3,"atomic_bytes":24576,"write_errors":0,"strict_failures":0,"passthrough":{"unaligned":1}}
{"pid":12,"exe":"/usr/bin/psql","why":"exit","atomic_writes":0,"write_errors":7,"passthrough":{}}`
	ds, err := parseDumps([]byte(dumps))
	if err != nil || len(ds) != 3 {
		t.Fatalf("parseDumps: %d, %v", len(ds), err)
	}
	s := sumDumps(ds, regexp.MustCompile(`/postgres$`))
	if s.Processes != 2 || s.AtomicWrites != 8 || s.AtomicBytes != 65536 || s.WriteErrors != 0 ||
		s.Passthrough["unaligned"] != 3 || s.Passthrough["fs_not_atomic"] != 1 {
		t.Errorf("sum %s", s)
	}
	if !s.wentAtomic() {
		t.Errorf("%s did not go atomic", s)
	}
	if all := sumDumps(ds, regexp.MustCompile(`.`)); all.wentAtomic() {
		t.Errorf("write errors accepted: %s", all)
	}
	if none := sumDumps(ds, regexp.MustCompile(`/(mariadbd|mysqld)$`)); none.Processes != 0 || none.wentAtomic() {
		t.Errorf("no process matched but %s", none)
	}
	if _, err := parseDumps([]byte(`{"pid":1} {`)); err == nil {
		t.Error("a cut dump accepted")
	}
}

func TestShimMounts(t *testing.T) {
	mounts := strings.Join([]string{
		"overlay / overlay rw,relatime 0 0",
		"/dev/loop1 /untorn ext4 ro,relatime 0 0",
		"/dev/loop2 /var/lib/postgresql/data xfs rw 0 0",
	}, "\n")
	held := mountsHolding(mounts, "/untorn/glibc/libuntorn.so")
	if len(held) != 1 || !anyReadOnly(held) {
		t.Errorf("held %q", held)
	}
	rw := mountsHolding(strings.ReplaceAll(mounts, "ro,relatime", "rw,relatime"), "/untorn/glibc/libuntorn.so")
	if anyReadOnly(rw) {
		t.Errorf("rw mount taken for read-only: %q", rw)
	}
	if h := mountsHolding(mounts, "/usr/lib/libuntorn.so"); len(h) != 0 {
		t.Errorf("the root counted as the shim mount: %q", h)
	}
	env := []byte("PATH=/bin\x00LD_PRELOAD=/untorn/glibc/libuntorn.so\x00HOME=/")
	if v := envValue(env, "LD_PRELOAD"); v != "/untorn/glibc/libuntorn.so" {
		t.Errorf("LD_PRELOAD %q", v)
	}
	if v := envValue(env, "LD_PRELOAD_X"); v != "" {
		t.Errorf("unset variable %q", v)
	}
}

func TestRolledOut(t *testing.T) {
	three := int32(3)
	s := func(gen, observed int64, ready int32, cur, upd string) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Generation: gen},
			Spec: appsv1.StatefulSetSpec{Replicas: &three,
				UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: observed, ReadyReplicas: ready,
				CurrentRevision: cur, UpdateRevision: upd},
		}
	}
	for name, tt := range map[string]struct {
		s    *appsv1.StatefulSet
		want bool
	}{
		"ready":             {s(2, 2, 3, "r1", "r1"), true},
		"not observed":      {s(2, 1, 3, "r1", "r1"), false},
		"never observed":    {s(1, 0, 3, "r1", "r1"), false},
		"replica not ready": {s(1, 1, 2, "r1", "r1"), false},
		"old revision":      {s(1, 1, 3, "r1", "r2"), false},
	} {
		if got, err := rolledOut(tt.s); err != nil || got != tt.want {
			t.Errorf("%s: rolledOut = %v, %v", name, got, err)
		}
	}
	onDelete := s(1, 1, 3, "r1", "r1")
	onDelete.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
	if _, err := rolledOut(onDelete); err == nil {
		t.Error("OnDelete: no error")
	}
}
