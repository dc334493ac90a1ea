package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The classes of check 3: the loop node's devices have no hardware atomic
// writes, so the first two must get no capacity there.
var (
	hardwareOnlyClasses = []string{"untorn-ext4-16k", "untorn-xfs-hw"}
	softwareClass       = "untorn-xfs"
)

// 3. Placement by capability. This node's loop devices have no hardware
// atomic writes, so the provisioner publishes a capacity of 0 here for
// untorn-ext4-16k and untorn-xfs-hw: their claims stay Pending with the
// scheduler's "not enough free storage" on the pod, and nothing is carved
// (no PV, no backing file). An untorn-xfs claim on the same node binds and
// mounts.
func checkPlacement(ctx context.Context, e *env) error {
	node := e.cfg.node
	var caps []storagev1.CSIStorageCapacity
	for _, class := range append(slices.Clone(hardwareOnlyClasses), softwareClass) {
		if poll(ctx, 180*time.Second, "a CSIStorageCapacity of "+class+" for "+node, func() bool {
			var err error
			caps, err = e.capacities(ctx)
			if err != nil {
				return false
			}
			_, ok := capacityPerClass(caps, node)[class]
			return ok
		}) != nil {
			return fail("no CSIStorageCapacity of %s for node %s", class, node)
		}
	}
	caps, err := e.capacities(ctx)
	if err != nil {
		return err
	}
	printCapacities(caps, false)
	per := capacityPerClass(caps, node)
	js, _ := json.Marshal(per)
	fmt.Printf("capacity per class on %s: %s\n", node, js)
	if !placementCapacityOK(per) {
		return fail("capacity per class is not 0 for the hardware-only classes and positive for %s: %s", softwareClass, js)
	}
	n, err := e.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	labels := map[string]string{}
	for k, v := range n.Labels {
		if strings.Contains(k, "untorn") {
			labels[k] = v
		}
	}
	js, _ = json.Marshal(labels)
	fmt.Printf("node labels from the driver's topology: %s\n", js)

	before, err := imageFiles(e.cfg.loopDir, false)
	if err != nil {
		return err
	}
	pending := map[string]string{"place-ext4": "untorn-ext4-16k", "place-xfshw": "untorn-xfs-hw"}
	for _, p := range []string{"place-ext4", "place-xfshw"} {
		if err := e.pvcPod(ctx, p, pending[p], "1Gi", e.cfg.image); err != nil {
			return err
		}
	}
	if err := e.readyPVCPod(ctx, "place-xfs", softwareClass); err != nil {
		return err
	}
	if err := e.show(ctx, "place-xfs", "", "grep", " /data ", "/proc/mounts"); err != nil {
		return fail("no mount at /data in pod place-xfs: %v", err)
	}
	for _, pod := range []string{"place-ext4", "place-xfshw"} {
		if err := e.staysPending(ctx, pod); err != nil {
			return err
		}
	}
	c, err := e.pvc(ctx, "place-xfs")
	if err != nil {
		return err
	}
	pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fail("PV of PVC place-xfs: %v", err)
	}
	if pv.Spec.CSI == nil {
		return fail("PV %s is not a CSI volume", pv.Name)
	}
	after, err := imageFiles(e.cfg.loopDir, false)
	if err != nil {
		return err
	}
	added := newNames(before, after)
	fmt.Printf("backing files new in this check: %s\n", strings.Join(added, " "))
	if want := pv.Spec.CSI.VolumeHandle + ".img"; len(added) != 1 || added[0] != want {
		return fail("backing files other than %s appeared: %s", want, strings.Join(added, " "))
	}
	return e.deletePodsAndPVCs(ctx, 60*time.Second, "place-ext4", "place-xfshw")
}

// notEnoughStorage is what the scheduler says of a pod whose claim no node
// has the capacity for.
var notEnoughStorage = regexp.MustCompile(`(?i)enough free storage`)

// staysPending checks that pod and its claim (of the same name) are
// Pending because the scheduler found no capacity, with no PV and no
// CreateVolume attempt.
func (e *env) staysPending(ctx context.Context, pod string) error {
	var evs []corev1.Event
	if poll(ctx, 120*time.Second, "a FailedScheduling event on pod "+pod, func() bool {
		var err error
		evs, err = e.events(ctx, pod, "FailedScheduling")
		return err == nil && len(evs) > 0
	}) != nil {
		return fail("no FailedScheduling event for pod %s", pod)
	}
	msgs := eventMessages(evs)
	fmt.Printf("FailedScheduling events of %s: %s\n", pod, msgs)
	if !notEnoughStorage.MatchString(msgs) {
		return fail("the events of pod %s do not name insufficient storage capacity", pod)
	}
	p, err := e.pod(ctx, pod)
	if err != nil {
		return err
	}
	if p.Status.Phase != corev1.PodPending {
		return fail("pod %s is not Pending", pod)
	}
	c, err := e.pvc(ctx, pod)
	if err != nil {
		return err
	}
	if c.Status.Phase != corev1.ClaimPending {
		return fail("PVC %s is not Pending", pod)
	}
	if c.Spec.VolumeName != "" {
		return fail("PVC %s is bound to %s", pod, c.Spec.VolumeName)
	}
	failed, err := e.events(ctx, pod, "ProvisioningFailed")
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		all, _ := e.events(ctx, pod, "")
		return fail("CreateVolume was attempted for %s: %s", pod, eventMessages(all))
	}
	return nil
}

func (e *env) capacities(ctx context.Context) ([]storagev1.CSIStorageCapacity, error) {
	l, err := e.cs.StorageV1().CSIStorageCapacities("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func printCapacities(caps []storagev1.CSIStorageCapacity, withNamespace bool) {
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	if withNamespace {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "CLASS\tCAPACITY\tTOPOLOGY")
	for _, c := range caps {
		if withNamespace {
			fmt.Fprintf(w, "%s\t", c.Namespace)
		}
		capacity := "<none>"
		if c.Capacity != nil {
			capacity = c.Capacity.String()
		}
		var topo any = "<none>"
		if c.NodeTopology != nil {
			topo = c.NodeTopology.MatchLabels
		}
		fmt.Fprintf(w, "%s\t%s\t%v\n", c.StorageClassName, capacity, topo)
	}
	w.Flush()
}

// onNode: the capacity's topology selects node (one of its labels has the
// node's name as value).
func onNode(c storagev1.CSIStorageCapacity, node string) bool {
	if c.NodeTopology == nil {
		return false
	}
	for _, v := range c.NodeTopology.MatchLabels {
		if v == node {
			return true
		}
	}
	return false
}

// capacityPerClass is the published capacity of each class on node ("0"
// where none is given); of several objects of a class the last one listed
// counts.
func capacityPerClass(caps []storagev1.CSIStorageCapacity, node string) map[string]string {
	per := map[string]string{}
	for _, c := range caps {
		if !onNode(c, node) {
			continue
		}
		per[c.StorageClassName] = "0"
		if c.Capacity != nil {
			per[c.StorageClassName] = c.Capacity.String()
		}
	}
	return per
}

// placementCapacityOK: the hardware-only classes have a capacity of 0 on
// the node and the software class has some.
func placementCapacityOK(per map[string]string) bool {
	for _, c := range hardwareOnlyClasses {
		if v, ok := per[c]; !ok || v != "0" {
			return false
		}
	}
	v, ok := per[softwareClass]
	return ok && v != "0"
}

// newNames is the names in after that are not in before, sorted.
func newNames(before, after []string) []string {
	var added []string
	for _, n := range after {
		if !slices.Contains(before, n) {
			added = append(added, n)
		}
	}
	slices.Sort(added)
	return added
}
