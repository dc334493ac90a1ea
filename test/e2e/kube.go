package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// env is a check's view of the cluster: the clients and the namespace it
// works in (check 4c works in a namespace of its own).
type env struct {
	cfg    config
	ns     string
	rest   *rest.Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newEnv(cfg config) (*env, error) {
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	return &env{cfg: cfg, ns: cfg.namespace, rest: rc, cs: cs, dyn: dyn, mapper: mapper}, nil
}

// inNamespace is the same environment working in namespace ns.
func (e *env) inNamespace(ns string) *env {
	c := *e
	c.ns = ns
	return &c
}

func (e *env) createNamespace(ctx context.Context, ns string) error {
	_, err := e.cs.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// deleteNamespace deletes ns and waits up to timeout until it is gone.
func (e *env) deleteNamespace(ctx context.Context, ns string, timeout time.Duration) error {
	err := e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return poll(ctx, timeout, "namespace "+ns+" to be deleted", func() bool {
		_, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// poll calls cond every second until it is true; after timeout it says what
// timed out and returns an error.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			logf("timed out after %ds waiting for %s", int(timeout.Seconds()), what)
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil
}

// exec runs cmd in a container of a pod of the namespace (container ""
// is the pod's only or default container) and returns its stdout and
// stderr. A non-zero exit is an error naming the status.
func (e *env) exec(ctx context.Context, pod, container string, cmd ...string) (stdout, stderr string, err error) {
	req := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(e.ns).Name(pod).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: container, Command: cmd, Stdout: true, Stderr: true,
	}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(e.rest, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		err = fmt.Errorf("%s in %s exited %d", strings.Join(cmd, " "), pod, ce.Code)
	} else if err != nil {
		err = fmt.Errorf("%s in %s: %w", strings.Join(cmd, " "), pod, err)
	}
	return out.String(), errb.String(), err
}

// output runs cmd in the container and returns its stdout without the
// trailing newlines (as a shell's $(...) does).
func (e *env) output(ctx context.Context, pod, container string, cmd ...string) (string, error) {
	out, stderr, err := e.exec(ctx, pod, container, cmd...)
	if err != nil && stderr != "" {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr))
	}
	return strings.TrimRight(out, "\n"), err
}

// show runs cmd in the container and prints what it wrote.
func (e *env) show(ctx context.Context, pod, container string, cmd ...string) error {
	out, stderr, err := e.exec(ctx, pod, container, cmd...)
	fmt.Print(out)
	os.Stdout.WriteString(stderr)
	return err
}

// pvcPod creates a PVC of class and size and a pod of image that mounts
// it at /data and sleeps, both called name.
func (e *env) pvcPod(ctx context.Context, name, class, size, image string) error {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			},
		},
	}
	if _, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create PVC %s: %w", name, err)
	}
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "c", Image: image, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sleep", "infinity"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name},
			}}},
		},
	}
	if _, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	fmt.Printf("persistentvolumeclaim/%s created\npod/%s created\n", name, name)
	return nil
}

func (e *env) pod(ctx context.Context, name string) (*corev1.Pod, error) {
	return e.cs.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
}

func (e *env) pvc(ctx context.Context, name string) (*corev1.PersistentVolumeClaim, error) {
	return e.cs.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, name, metav1.GetOptions{})
}

// podReady: the pod exists and its Ready condition is true.
func (e *env) podReady(ctx context.Context, name string) bool {
	p, err := e.pod(ctx, name)
	return err == nil && isReady(p)
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyPVCPod creates a PVC of class and a pod that mounts it (pvcPod, 1Gi,
// the untorn image) and waits up to 180 s for the pod to be Ready.
func (e *env) readyPVCPod(ctx context.Context, name, class string) error {
	if err := e.pvcPod(ctx, name, class, "1Gi", e.cfg.image); err != nil {
		return err
	}
	if e.waitPodReady(ctx, name, 180*time.Second) != nil {
		return fail("pod %s (%s) did not become Ready", name, class)
	}
	return nil
}

// waitPodReady polls up to timeout for the pod to be Ready.
func (e *env) waitPodReady(ctx context.Context, name string, timeout time.Duration) error {
	return poll(ctx, timeout, "pod "+name+" Ready", func() bool { return e.podReady(ctx, name) })
}

// deletePodsAndPVCs deletes the pods and PVCs called names (in that order of kinds)
// and waits up to timeout for each to be gone.
func (e *env) deletePodsAndPVCs(ctx context.Context, timeout time.Duration, names ...string) error {
	for _, n := range names {
		if err := e.deleteAndWait(ctx, "pod", n, timeout); err != nil {
			return err
		}
	}
	for _, n := range names {
		if err := e.deleteAndWait(ctx, "persistentvolumeclaim", n, timeout); err != nil {
			return err
		}
	}
	return nil
}

// deleteAndWait deletes one pod or PVC and waits up to timeout until that
// object (its UID) is gone; a StatefulSet may create a new one of the same
// name meanwhile.
func (e *env) deleteAndWait(ctx context.Context, kind, name string, timeout time.Duration) error {
	get := func() (types.UID, error) {
		switch kind {
		case "pod":
			p, err := e.pod(ctx, name)
			if err != nil {
				return "", err
			}
			return p.UID, nil
		default:
			p, err := e.pvc(ctx, name)
			if err != nil {
				return "", err
			}
			return p.UID, nil
		}
	}
	uid, err := get()
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	pre := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	if kind == "pod" {
		err = e.cs.CoreV1().Pods(e.ns).Delete(ctx, name, pre)
	} else {
		err = e.cs.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, name, pre)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", kind, name, err)
	}
	fmt.Printf("%s %q deleted\n", kind, name)
	return poll(ctx, timeout, kind+" "+name+" to be deleted", func() bool {
		now, err := get()
		return apierrors.IsNotFound(err) || (err == nil && now != uid)
	})
}

// rolledOut is kubectl rollout status for a StatefulSet: every replica of
// the current revision is ready.
func rolledOut(s *appsv1.StatefulSet) (bool, error) {
	if s.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		return false, fmt.Errorf("rollout status is only available for the %s strategy", appsv1.RollingUpdateStatefulSetStrategyType)
	}
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return false, nil
	}
	if s.Spec.Replicas != nil && s.Status.ReadyReplicas < *s.Spec.Replicas {
		return false, nil
	}
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && s.Spec.Replicas != nil {
		return s.Status.UpdatedReplicas >= *s.Spec.Replicas-*ru.Partition, nil
	}
	return s.Status.UpdateRevision == s.Status.CurrentRevision, nil
}

// waitRollout polls up to timeout for the StatefulSet to be rolled out.
func (e *env) waitRollout(ctx context.Context, name string, timeout time.Duration) error {
	var last error
	err := poll(ctx, timeout, "statefulset "+name+" rolled out", func() bool {
		s, err := e.cs.AppsV1().StatefulSets(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err
			return false
		}
		ok, err := rolledOut(s)
		last = err
		return ok || err != nil
	})
	if last != nil {
		return last
	}
	if err == nil {
		fmt.Printf("statefulset rolling update complete %s\n", name)
	}
	return err
}

// events lists the namespace's events about the object called name, of
// reason when it is not "".
func (e *env) events(ctx context.Context, name, reason string) ([]corev1.Event, error) {
	sel := "involvedObject.name=" + name
	if reason != "" {
		sel += ",reason=" + reason
	}
	l, err := e.cs.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func eventMessages(evs []corev1.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		b.WriteString(ev.Message)
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// claimVolumes is "name=volume " for each PVC of the namespace, by name.
func (e *env) claimVolumes(ctx context.Context) (string, error) {
	l, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, c := range l.Items {
		fmt.Fprintf(&b, "%s=%s ", c.Name, c.Spec.VolumeName)
	}
	return b.String(), nil
}
