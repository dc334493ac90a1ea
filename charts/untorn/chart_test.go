// Package chart_test renders the Helm chart with the pinned helm, decodes
// every object strictly into its k8s.io/api type and checks the invariants
// a working installation depends on.
package chart_test

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/untorn/untorn/pkg/driver"
	"github.com/untorn/untorn/pkg/webhook"
)

const pluginSock = "/var/lib/kubelet/plugins/untorn.csi.dev/csi.sock"

func TestCSIDriver(t *testing.T) {
	r := render(t)
	d := r.find(t, "CSIDriver", driver.DriverName).(*storagev1.CSIDriver)
	s := d.Spec
	if s.AttachRequired == nil || *s.AttachRequired {
		t.Errorf("attachRequired = %v, want false", s.AttachRequired)
	}
	if s.PodInfoOnMount == nil || !*s.PodInfoOnMount {
		t.Errorf("podInfoOnMount = %v, want true", s.PodInfoOnMount)
	}
	if s.StorageCapacity == nil || !*s.StorageCapacity {
		t.Errorf("storageCapacity = %v, want true", s.StorageCapacity)
	}
	if s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("fsGroupPolicy = %v, want File", s.FSGroupPolicy)
	}
	modes := map[storagev1.VolumeLifecycleMode]bool{}
	for _, m := range s.VolumeLifecycleModes {
		modes[m] = true
	}
	if len(modes) != 2 || !modes[storagev1.VolumeLifecyclePersistent] || !modes[storagev1.VolumeLifecycleEphemeral] {
		t.Errorf("volumeLifecycleModes = %v, want Persistent and Ephemeral", s.VolumeLifecycleModes)
	}
}

func TestNodeDaemonSet(t *testing.T) {
	r := render(t)
	ds := r.daemonSet(t)
	spec := &ds.Spec.Template.Spec
	if spec.HostPID {
		t.Error("node pods run with hostPID")
	}
	plugin := container(t, spec, "untorn-csi")
	if sc := plugin.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("plugin container is not privileged: %+v", plugin.SecurityContext)
	}
	requireArgs(t, plugin, "--mode=all", "--endpoint=unix:///csi/csi.sock", "--node-id=$(NODE_NAME)",
		"--backend=lvm", "--volume-group=untorn", "--shim-dir=/usr/lib/untorn/shim")
	if m := mount(plugin, "/var/lib/kubelet"); m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("kubelet dir mount %+v, want Bidirectional propagation", m)
	}
	// the default backend is LVM: the host's LVM locks, records and devices file
	for _, p := range []string{"/dev", "/sys", "/csi", "/run/lvm", "/run/lock/lvm", "/etc/lvm/devices"} {
		if mount(plugin, p) == nil {
			t.Errorf("plugin container does not mount %s", p)
		}
	}
	// Host paths behind the mounts.
	for name, path := range map[string]string{"kubelet-dir": "/var/lib/kubelet", "dev": "/dev", "sys": "/sys",
		"plugin-dir": "/var/lib/kubelet/plugins/untorn.csi.dev", "registration-dir": "/var/lib/kubelet/plugins_registry",
		"run-lvm": "/run/lvm", "run-lock-lvm": "/run/lock/lvm", "lvm-devices": "/etc/lvm/devices"} {
		v := volume(spec, name)
		if v == nil || v.HostPath == nil || v.HostPath.Path != path {
			t.Errorf("volume %s = %+v, want hostPath %s", name, v, path)
		}
	}

	prov := container(t, spec, "csi-provisioner")
	requireArgs(t, prov, "--csi-address=/csi/csi.sock", "--node-deployment", "--enable-capacity", "--strict-topology",
		"--capacity-ownerref-level=1")
	envs := map[string]string{}
	for _, e := range prov.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			envs[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	for name, path := range map[string]string{"NODE_NAME": "spec.nodeName", "NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"} {
		if envs[name] != path {
			t.Errorf("provisioner env %s from %q, want %q", name, envs[name], path)
		}
	}

	reg := container(t, spec, "node-driver-registrar")
	requireArgs(t, reg, "--csi-address=/csi/csi.sock", "--kubelet-registration-path="+pluginSock)
	if !strings.HasPrefix(reg.Image, "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.") {
		t.Errorf("registrar image %s", reg.Image)
	}
	if mount(reg, "/registration") == nil {
		t.Error("registrar does not mount /registration")
	}

	probe := container(t, spec, "liveness-probe")
	requireArgs(t, probe, "--csi-address=/csi/csi.sock", "--health-port=9808")
	if lp := plugin.LivenessProbe; lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Port.String() != "healthz" {
		t.Errorf("plugin liveness probe %+v, want httpGet on port healthz", plugin.LivenessProbe)
	}
	if !hasPort(plugin, "healthz", 9808) {
		t.Error("plugin container has no healthz port 9808")
	}

	// Every container has requests and a memory limit.
	for _, c := range spec.Containers {
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s resources %+v, want cpu/memory requests and a memory limit", c.Name, c.Resources)
		}
	}
	if len(spec.Tolerations) == 0 || spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("default tolerations %v / nodeSelector %v", spec.Tolerations, spec.NodeSelector)
	}
	checkSelector(t, "DaemonSet", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
}

func hasPort(c *corev1.Container, name string, port int32) bool {
	for _, p := range c.Ports {
		if p.Name == name && p.ContainerPort == port {
			return true
		}
	}
	return false
}

func checkSelector(t *testing.T, what string, selector, podLabels map[string]string) {
	t.Helper()
	if len(selector) == 0 || !labels.SelectorFromSet(selector).Matches(labels.Set(podLabels)) {
		t.Errorf("%s selector %v does not select its pod labels %v", what, selector, podLabels)
	}
}

func TestControllerDeployment(t *testing.T) {
	r := render(t)
	d := r.deployment(t, release+"-controller")
	spec := &d.Spec.Template.Spec
	requireArgs(t, container(t, spec, "untorn-csi"), "--mode=controller", "--endpoint=unix:///csi/csi.sock")
	rs := container(t, spec, "csi-resizer")
	requireArgs(t, rs, "--csi-address=/csi/csi.sock")
	if !strings.HasPrefix(rs.Image, "registry.k8s.io/sig-storage/csi-resizer:v2.") {
		t.Errorf("resizer image %s", rs.Image)
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("controller pod does not run as non-root: %+v", spec.SecurityContext)
	}
	checkSelector(t, "controller", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
}

// allowed reports whether the rules grant verb on resource in group.
func allowed(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if contains(r.APIGroups, group) && contains(r.Resources, resource) && (contains(r.Verbs, verb) || contains(r.Verbs, "*")) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestRBAC(t *testing.T) {
	r := render(t)
	// Gather each service account's rules through its bindings.
	rules := map[string][]rbacv1.PolicyRule{}
	for _, o := range r.all("ClusterRoleBinding") {
		b := o.(*rbacv1.ClusterRoleBinding)
		role := r.find(t, "ClusterRole", b.RoleRef.Name).(*rbacv1.ClusterRole)
		for _, s := range b.Subjects {
			rules[s.Namespace+"/"+s.Name] = append(rules[s.Namespace+"/"+s.Name], role.Rules...)
		}
	}
	for _, o := range r.all("RoleBinding") {
		b := o.(*rbacv1.RoleBinding)
		role := r.find(t, "Role", b.RoleRef.Name).(*rbacv1.Role)
		for _, s := range b.Subjects {
			rules[s.Namespace+"/"+s.Name] = append(rules[s.Namespace+"/"+s.Name], role.Rules...)
		}
	}
	node := rules[namespace+"/"+release+"-node"]
	for _, want := range []struct{ group, resource, verb string }{
		{"", "persistentvolumes", "create"}, {"", "persistentvolumes", "delete"},
		{"", "persistentvolumeclaims", "watch"}, {"", "nodes", "get"}, {"", "events", "create"},
		{"storage.k8s.io", "storageclasses", "list"}, {"storage.k8s.io", "csinodes", "get"},
		{"storage.k8s.io", "csistoragecapacities", "create"}, {"storage.k8s.io", "csistoragecapacities", "delete"},
		{"", "pods", "get"}, {"apps", "daemonsets", "get"},
	} {
		if !allowed(node, want.group, want.resource, want.verb) {
			t.Errorf("node service account cannot %s %s.%s", want.verb, want.resource, want.group)
		}
	}
	ctrl := rules[namespace+"/"+release+"-controller"]
	for _, want := range []struct{ group, resource, verb string }{
		{"", "persistentvolumes", "patch"}, {"", "persistentvolumeclaims/status", "patch"},
		{"", "pods", "list"}, {"coordination.k8s.io", "leases", "update"},
	} {
		if !allowed(ctrl, want.group, want.resource, want.verb) {
			t.Errorf("controller service account cannot %s %s.%s", want.verb, want.resource, want.group)
		}
	}
	// Every workload runs under a service account the chart creates.
	for _, sa := range []string{r.daemonSet(t).Spec.Template.Spec.ServiceAccountName,
		r.deployment(t, release+"-controller").Spec.Template.Spec.ServiceAccountName,
		r.deployment(t, release+"-webhook").Spec.Template.Spec.ServiceAccountName} {
		if !r.has("ServiceAccount", sa) {
			t.Errorf("service account %q is not rendered", sa)
		}
	}
}

func TestStorageClasses(t *testing.T) {
	r := render(t)
	want := map[string]string{"untorn-ext4-16k": "ext4", "untorn-xfs": "xfs", "untorn-xfs-hw": "xfs"}
	wantSource := map[string]string{"untorn-xfs-hw": "hardware"}
	classes := r.all("StorageClass")
	if len(classes) != len(want) {
		t.Errorf("%d storage classes, want %d", len(classes), len(want))
	}
	for _, o := range classes {
		sc := o.(*storagev1.StorageClass)
		if sc.Provisioner != driver.DriverName {
			t.Errorf("%s: provisioner %s", sc.Name, sc.Provisioner)
		}
		if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
			t.Errorf("%s: volumeBindingMode %v, want WaitForFirstConsumer", sc.Name, sc.VolumeBindingMode)
		}
		if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
			t.Errorf("%s: volume expansion not allowed", sc.Name)
		}
		got, err := driver.ValidateCreateParameters(sc.Parameters)
		if err != nil {
			t.Errorf("%s: driver rejects parameters %v: %v", sc.Name, sc.Parameters, err)
			continue
		}
		if got[driver.ParamFSType] != want[sc.Name] || got[driver.ParamAtomicPolicy] != "require" || got[driver.ParamAtomicWriteUnit] != "16384" ||
			got[driver.ParamAtomicSource] != wantSource[sc.Name] {
			t.Errorf("%s: effective parameters %v", sc.Name, got)
		}
	}
}

func TestWebhook(t *testing.T) {
	r := render(t)
	name := release + "-webhook"
	mwc := r.find(t, "MutatingWebhookConfiguration", name).(*admissionregistrationv1.MutatingWebhookConfiguration)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	// Only opted-in pods are sent to the webhook: failing closed harms no
	// other pod, and an opted-in pod never starts without the shim.
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v, want Fail by default", w.FailurePolicy)
	}
	if w.SideEffects == nil || string(*w.SideEffects) != "None" {
		t.Errorf("sideEffects %v, want None", w.SideEffects)
	}
	if w.ObjectSelector == nil || w.ObjectSelector.MatchLabels[webhook.InjectLabel] != "true" {
		t.Errorf("objectSelector %+v, want %s=true", w.ObjectSelector, webhook.InjectLabel)
	}
	if len(w.Rules) != 2 || !contains(w.Rules[0].Resources, "pods") || len(w.Rules[0].Operations) != 1 || w.Rules[0].Operations[0] != "CREATE" ||
		!contains(w.Rules[1].Resources, "pods/ephemeralcontainers") || len(w.Rules[1].Operations) != 1 || w.Rules[1].Operations[0] != "UPDATE" {
		t.Errorf("rules %+v, want pods CREATE and pods/ephemeralcontainers UPDATE", w.Rules)
	}
	svcRef := w.ClientConfig.Service
	if svcRef == nil || svcRef.Name != name || svcRef.Namespace != namespace || svcRef.Path == nil || *svcRef.Path != "/mutate-pod" {
		t.Fatalf("clientConfig.service %+v", svcRef)
	}

	// The generated CA in caBundle verifies the served certificate for the
	// service's DNS name.
	secret := r.find(t, "Secret", name+"-tls").(*corev1.Secret)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
		t.Fatal("caBundle holds no PEM certificate")
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("secret tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: name + "." + namespace + ".svc", Roots: pool}); err != nil {
		t.Errorf("served certificate does not verify against caBundle: %v", err)
	}

	// Service selects the webhook pods, on the port the server listens on.
	svc := r.find(t, "Service", name).(*corev1.Service)
	d := r.deployment(t, name)
	checkSelector(t, "webhook Service", svc.Spec.Selector, d.Spec.Template.Labels)
	checkSelector(t, "webhook Deployment", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	c := container(t, &d.Spec.Template.Spec, "webhook")
	requireArgs(t, c, "--listen=:9443", "--driver-name="+driver.DriverName, "--default-libc=glibc", "--default-unit=8192")
	if !hasPort(c, "https", 9443) || svc.Spec.Ports[0].TargetPort.String() != "https" {
		t.Errorf("webhook ports %+v / service target %v", c.Ports, svc.Spec.Ports[0].TargetPort)
	}
	if d.Spec.Template.Annotations["checksum/tls"] == "" {
		t.Error("webhook pods do not roll when the generated certificate changes")
	}
}
