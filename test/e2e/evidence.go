package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkEvidence is what every failing check prints: the namespace's pods,
// PVCs and the PVs, the state of each pod and PVC, the namespace's events,
// the driver's logs and the kubelet's lines about the driver or volumes.
func (e *env) checkEvidence(ctx context.Context) {
	fmt.Printf("--- objects in %s\n", e.ns)
	e.printPods(ctx, e.ns)
	e.printPVCs(ctx)
	e.printPVs(ctx)
	fmt.Printf("--- pods and PVCs in %s in detail\n", e.ns)
	e.describe(ctx)
	fmt.Printf("--- events in %s\n", e.ns)
	e.printEvents(ctx, e.ns, 40)
	e.driverLogs(ctx, 80)
	fmt.Println("--- kubelet log lines about the driver or volumes")
	printMatching(e.cfg.kubeletLog, regexp.MustCompile(`untorn|csi|[Vv]olume`), 40)
}

// clusterEvidence is what a failed run prints: nodes, every pod, the
// latest events and the driver's logs.
func (e *env) clusterEvidence(ctx context.Context) {
	fmt.Println("--- nodes")
	if l, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Println(err)
	} else {
		w := table("NAME", "READY", "VERSION", "INTERNAL-IP")
		for _, n := range l.Items {
			ready, ip := "Unknown", ""
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					ready = string(c.Status)
				}
			}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					ip = a.Address
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.Name, ready, n.Status.NodeInfo.KubeletVersion, ip)
		}
		w.Flush()
	}
	fmt.Println("--- pods in every namespace")
	e.printPods(ctx, "")
	fmt.Println("--- events in every namespace")
	e.printEvents(ctx, "", 40)
	e.driverLogs(ctx, 60)
}

func table(cols ...string) *tabwriter.Writer {
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(cols, "\t"))
	return w
}

// printPods lists the pods of ns ("" = every namespace).
func (e *env) printPods(ctx context.Context, ns string) {
	l, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	w := table("NAMESPACE", "NAME", "READY", "PHASE", "RESTARTS", "NODE", "IP")
	for _, p := range l.Items {
		ready, restarts := 0, int32(0)
		for _, s := range p.Status.ContainerStatuses {
			if s.Ready {
				ready++
			}
			restarts += s.RestartCount
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%d\t%s\t%s\n", p.Namespace, p.Name, ready,
			len(p.Spec.Containers), p.Status.Phase, restarts, p.Spec.NodeName, p.Status.PodIP)
	}
	w.Flush()
}

func (e *env) printPVCs(ctx context.Context) {
	l, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	w := table("PVC", "STATUS", "VOLUME", "CAPACITY", "CLASS")
	for _, c := range l.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Status.Phase, c.Spec.VolumeName,
			quantity(c.Status.Capacity), deref(c.Spec.StorageClassName))
	}
	w.Flush()
}

func (e *env) printPVs(ctx context.Context) {
	l, err := e.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	w := table("PV", "CAPACITY", "STATUS", "CLAIM", "CLASS", "HANDLE")
	for _, v := range l.Items {
		claim, handle := "", ""
		if r := v.Spec.ClaimRef; r != nil {
			claim = r.Namespace + "/" + r.Name
		}
		if v.Spec.CSI != nil {
			handle = v.Spec.CSI.VolumeHandle
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, quantity(v.Spec.Capacity), v.Status.Phase,
			claim, v.Spec.StorageClassName, handle)
	}
	w.Flush()
}

// describe prints what kubectl describe tells about a pod or PVC that did
// not come up: conditions, container states, the claim's annotations, each
// object's events.
func (e *env) describe(ctx context.Context) {
	pods, err := e.cs.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range pods.Items {
		fmt.Printf("pod %s: phase %s, node %q, reason %q %s\n", p.Name, p.Status.Phase, p.Spec.NodeName,
			p.Status.Reason, p.Status.Message)
		for _, c := range p.Status.Conditions {
			fmt.Printf("  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Printf("  container %s: image %s, ready %v, restarts %d, %s\n", s.Name, s.Image, s.Ready,
				s.RestartCount, containerState(s.State))
			if s.LastTerminationState.Terminated != nil {
				fmt.Printf("    last: %s\n", containerState(s.LastTerminationState))
			}
		}
		e.printObjectEvents(ctx, p.Name)
	}
	pvcs, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range pvcs.Items {
		fmt.Printf("pvc %s: phase %s, class %s, volume %q, selected node %q, requested %s, capacity %s\n",
			c.Name, c.Status.Phase, deref(c.Spec.StorageClassName), c.Spec.VolumeName,
			c.Annotations["volume.kubernetes.io/selected-node"],
			quantity(c.Spec.Resources.Requests), quantity(c.Status.Capacity))
		for _, cond := range c.Status.Conditions {
			fmt.Printf("  condition %s=%s %s %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
		}
		e.printObjectEvents(ctx, c.Name)
	}
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("waiting: %s %s", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated: %s, exit %d %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.UTC().Format(time.RFC3339)
	}
	return "no state"
}

func (e *env) printObjectEvents(ctx context.Context, name string) {
	evs, err := e.events(ctx, name, "")
	if err != nil {
		fmt.Println("  events:", err)
		return
	}
	sortEvents(evs)
	for _, ev := range evs {
		fmt.Printf("  event %s %s (x%d): %s\n", ev.Type, ev.Reason, max(ev.Count, 1), strings.TrimSpace(ev.Message))
	}
}

// printEvents prints the last n events of ns ("" = every namespace),
// oldest first.
func (e *env) printEvents(ctx context.Context, ns string, n int) {
	l, err := e.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	evs := l.Items
	sortEvents(evs)
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	w := table("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")
	for _, ev := range evs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s/%s/%s\t%s\n", eventTime(ev).UTC().Format("15:04:05"), ev.Type, ev.Reason,
			ev.InvolvedObject.Namespace, strings.ToLower(ev.InvolvedObject.Kind), ev.InvolvedObject.Name, strings.TrimSpace(ev.Message))
	}
	w.Flush()
}

func eventTime(ev corev1.Event) time.Time {
	for _, t := range []time.Time{ev.LastTimestamp.Time, ev.EventTime.Time, ev.FirstTimestamp.Time, ev.CreationTimestamp.Time} {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

func sortEvents(evs []corev1.Event) {
	sort.SliceStable(evs, func(i, j int) bool { return eventTime(evs[i]).Before(eventTime(evs[j])) })
}

// driverLogs prints the last n lines of every container of the chart's
// pods.
func (e *env) driverLogs(ctx context.Context, n int64) {
	pods, err := e.cs.CoreV1().Pods(e.cfg.releaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			fmt.Printf("--- pod/%s [%s] (last %d lines)\n", p.Name, c.Name, n)
			e.containerLog(ctx, e.cfg.releaseNamespace, p.Name, c.Name, &n, os.Stdout)
		}
	}
}

// containerLog copies a container's log (its last *tail lines, or all of
// it when tail is nil) to w.
func (e *env) containerLog(ctx context.Context, ns, pod, container string, tail *int64, w io.Writer) {
	rc, err := e.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: tail}).Stream(ctx)
	if err != nil {
		fmt.Fprintln(w, err)
		return
	}
	defer rc.Close()
	_, _ = io.Copy(w, rc)
}

// logLines is the lines of a container's log that contain any of words.
func (e *env) logLines(ctx context.Context, pod, container string, re *regexp.Regexp) string {
	var b strings.Builder
	e.containerLog(ctx, e.ns, pod, container, nil, &b)
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// printMatching prints the last n lines of file that match re.
func printMatching(file string, re *regexp.Regexp, n int) {
	if file == "" {
		return
	}
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if re.MatchString(sc.Text()) {
			lines = append(lines, sc.Text())
			if len(lines) > n {
				lines = lines[1:]
			}
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

func quantity(l corev1.ResourceList) string {
	if q, ok := l[corev1.ResourceStorage]; ok {
		return q.String()
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
