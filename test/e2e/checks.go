package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// 1. The driver is registered: CSIDriver object, the node's CSINode lists the
// driver, and the provisioner published CSIStorageCapacity for the node.
func checkRegistration(ctx context.Context, e *env) error {
	d, err := e.cs.StorageV1().CSIDrivers().Get(ctx, e.cfg.driver, metav1.GetOptions{})
	if err != nil {
		return fail("CSIDriver %s: %v", e.cfg.driver, err)
	}
	spec, _ := yaml.Marshal(map[string]any{"spec": d.Spec})
	fmt.Print(string(spec))
	node := e.cfg.node
	var drivers []string
	csiNode := func() bool {
		n, err := e.cs.StorageV1().CSINodes().Get(ctx, node, metav1.GetOptions{})
		drivers = nil
		if err != nil {
			return false
		}
		for _, d := range n.Spec.Drivers {
			drivers = append(drivers, d.Name)
		}
		return slices.Contains(drivers, e.cfg.driver)
	}
	if poll(ctx, 120*time.Second, "CSINode "+node+" to list "+e.cfg.driver, csiNode) != nil {
		n, err := e.cs.StorageV1().CSINodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return fail("CSINode %s does not list %s: %v", node, e.cfg.driver, err)
		}
		y, _ := yaml.Marshal(n)
		return fail("CSINode %s does not list %s: %s", node, e.cfg.driver, y)
	}
	fmt.Printf("CSINode %s drivers: %s\n", node, strings.Join(drivers, " "))
	var caps []storagev1.CSIStorageCapacity
	if poll(ctx, 180*time.Second, "CSIStorageCapacity objects", func() bool {
		caps, err = e.capacities(ctx)
		return err == nil && len(caps) > 0
	}) != nil {
		return fail("no CSIStorageCapacity objects after 180s")
	}
	printCapacities(caps, true)
	n := 0
	for _, c := range caps {
		if onNode(c, node) && c.Capacity != nil && c.Capacity.String() != "0" {
			n++
		}
	}
	if n == 0 {
		return fail("no CSIStorageCapacity with capacity for node %s", node)
	}
	fmt.Printf("CSIStorageCapacity objects with capacity on %s: %d\n", node, n)
	return nil
}

// 2. An XFS PVC binds on first use, the pod starts, and inside the pod
// untornctl verifies real atomic writes of at least 8 KiB.
func checkXFSVolume(ctx context.Context, e *env) error {
	if err := e.readyPVCPod(ctx, "xfs", "untorn-xfs"); err != nil {
		return err
	}
	c, err := e.pvc(ctx, "xfs")
	if err != nil {
		return err
	}
	fmt.Printf("PVC: %s %s %s\n", c.Status.Phase, c.Spec.VolumeName, quantity(c.Status.Capacity))
	if err := e.show(ctx, "xfs", "", "grep", " /data ", "/proc/mounts"); err != nil {
		return fail("no mount at /data in pod xfs: %v", err)
	}
	out, stderr, err := e.exec(ctx, "xfs", "", "untornctl", "verify", "/data", "--unit", "8Ki", "--json")
	out = strings.TrimRight(out, "\n")
	fmt.Printf("untornctl verify /data --unit 8Ki --json (%v): %s%s\n", exitOf(err), out, stderr)
	if err != nil {
		return fail("untornctl verify: %v", err)
	}
	if !verifiedAtomic(out, 8192, "xfs") {
		return fail("volume is not atomic for 8 KiB: %s", out)
	}
	if err := e.show(ctx, "xfs", "", "untornctl", "verify", "/data", "--unit", "16Ki"); err != nil {
		return fail("untornctl verify /data --unit 16Ki: %v", err)
	}
	return nil
}

// verifiedAtomic: untornctl verify's JSON says the filesystem fsType
// wrote an atomic unit of at least unit bytes.
func verifiedAtomic(out string, unit uint64, fsType string) bool {
	var v struct {
		Atomic *bool   `json:"atomic"`
		Unit   *uint64 `json:"unit"`
		FSType *string `json:"fsType"`
	}
	if json.Unmarshal([]byte(out), &v) != nil || v.Atomic == nil || v.Unit == nil || v.FSType == nil {
		return false
	}
	return *v.Atomic && *v.Unit >= unit && *v.FSType == fsType
}

func exitOf(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// 5. Growing a bound PVC grows the mounted filesystem without a restart.
func checkExpand(ctx context.Context, e *env) error {
	if err := e.readyPVCPod(ctx, "grow", "untorn-xfs"); err != nil {
		return err
	}
	before, err := e.fsSize(ctx, "grow")
	if err != nil {
		return err
	}
	fmt.Printf("filesystem size before: %d\n", before)
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}`)
	if _, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Patch(ctx, "grow", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fail("patch PVC grow: %v", err)
	}
	fmt.Println("persistentvolumeclaim/grow patched")
	if poll(ctx, 180*time.Second, "PVC grow to report 2Gi", func() bool {
		c, err := e.pvc(ctx, "grow")
		return err == nil && quantity(c.Status.Capacity) == "2Gi"
	}) != nil {
		c, err := e.pvc(ctx, "grow")
		if err != nil {
			return fail("PVC grow did not reach 2Gi: %v", err)
		}
		st, _ := yaml.Marshal(map[string]any{"status": c.Status})
		return fail("PVC grow did not reach 2Gi: %s", st)
	}
	if poll(ctx, 60*time.Second, "the mounted filesystem to grow", func() bool {
		n, err := e.fsSize(ctx, "grow")
		return err == nil && n > before
	}) != nil {
		return fail("filesystem in the pod still %d bytes", before)
	}
	after, err := e.fsSize(ctx, "grow")
	if err != nil {
		return err
	}
	p, err := e.pod(ctx, "grow")
	if err != nil {
		return err
	}
	restarts := int32(0)
	if len(p.Status.ContainerStatuses) > 0 {
		restarts = p.Status.ContainerStatuses[0].RestartCount
	}
	fmt.Printf("filesystem size after: %d (pod uid unchanged: %d restarts)\n", after, restarts)
	if after <= before+512*1024*1024 {
		return fail("filesystem grew only from %d to %d", before, after)
	}
	if err := e.show(ctx, "grow", "", "untornctl", "verify", "/data", "--unit", "8Ki"); err != nil {
		return fail("untornctl verify /data --unit 8Ki after the expansion: %v", err)
	}
	return nil
}

// fsSize is the size in bytes of the filesystem at /data in the pod, as df
// reports it.
func (e *env) fsSize(ctx context.Context, pod string) (int64, error) {
	out, err := e.output(ctx, pod, "", "df", "-B1", "--output=size", "/data")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	n, err := strconv.ParseInt(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("df in %s: %q: %w", pod, out, err)
	}
	return n, nil
}

// csiMounts matches the kubelet's CSI staging and publish mounts (the
// driver pods' own token mounts are not CSI volumes).
var csiMounts = regexp.MustCompile(`/var/lib/kubelet/(pods/[^ ]*/volumes/kubernetes.io~csi|plugins/kubernetes.io/csi)/`)

// 6. Deleting every workload and PVC deletes the volumes: no PV, no backing
// file and no loop device is left.
func checkCleanup(ctx context.Context, e *env) error {
	if err := e.deleteAll(ctx, 180*time.Second); err != nil {
		return err
	}
	var left []string
	if poll(ctx, 180*time.Second, "every PV of "+e.cfg.driver+" to be deleted", func() bool {
		l, err := e.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		left = nil
		for _, v := range l.Items {
			if v.Spec.CSI != nil && v.Spec.CSI.Driver == e.cfg.driver {
				left = append(left, v.Name)
			}
		}
		return len(left) == 0
	}) != nil {
		e.printPVs(ctx)
		return fail("PVs left: %s", strings.Join(left, " "))
	}
	files, err := imageFiles(e.cfg.loopDir, true)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, e.cfg.localCluster, "loops").Output()
	if err != nil {
		return fail("%s loops: %v", e.cfg.localCluster, err)
	}
	loops := strings.Fields(string(out))
	fmt.Printf("backing files left: %s; loop devices left: %s\n", orNone(files), orNone(loops))
	if len(files) > 0 {
		return fail("backing files left in %s: %s", e.cfg.loopDir, strings.Join(files, " "))
	}
	if len(loops) > 0 {
		return fail("loop devices left: %s", strings.Join(loops, " "))
	}
	// this program runs in the cluster's mount namespace: its mounts are
	// the kubelet's
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	var csi []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if csiMounts.MatchString(l) {
			csi = append(csi, l)
		}
	}
	if len(csi) > 0 {
		return fail("CSI volume mounts left in the kubelet's directory: %s", strings.Join(csi, "\n"))
	}
	return nil
}

// deleteAll deletes every StatefulSet and pod, then every PVC of the
// namespace, each waited for up to timeout.
func (e *env) deleteAll(ctx context.Context, timeout time.Duration) error {
	sts := e.cs.AppsV1().StatefulSets(e.ns)
	l, err := sts.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, s := range l.Items {
		if err := sts.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
			return fail("delete statefulset %s: %v", s.Name, err)
		}
		fmt.Printf("statefulset.apps %q deleted\n", s.Name)
	}
	if err := poll(ctx, timeout, "the StatefulSets to be deleted", func() bool {
		l, err := sts.List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0
	}); err != nil {
		return err
	}
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if err := e.deleteAndWait(ctx, "pod", p.Name, timeout); err != nil {
			return err
		}
	}
	pvcs, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, c := range pvcs.Items {
		if err := e.deleteAndWait(ctx, "persistentvolumeclaim", c.Name, timeout); err != nil {
			return err
		}
	}
	return nil
}

// imageFiles lists the names of the backing files (*.img) in dir; with
// regular, only regular files.
func imageFiles(dir string, regular bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range ents {
		if strings.HasSuffix(d.Name(), ".img") && (!regular || d.Type().IsRegular()) {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}
