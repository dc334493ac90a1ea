package chart_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/untorn/untorn/pkg/driver"
)

func TestValueVariants(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, r rendered)
	}{
		{
			name: "builtin registrar",
			args: []string{"--set", "registrar.mode=builtin", "--set", "image.repository=docker.io/untorn/untorn", "--set", "image.tag=e2e"},
			check: func(t *testing.T, r rendered) {
				spec := &r.daemonSet(t).Spec.Template.Spec
				for _, c := range spec.Containers {
					if c.Name == "node-driver-registrar" {
						t.Error("upstream registrar rendered in builtin mode")
					}
				}
				reg := container(t, spec, "untorn-registrar")
				if reg.Image != "docker.io/untorn/untorn:e2e" || len(reg.Command) != 1 || reg.Command[0] != "/usr/bin/untorn-registrar" {
					t.Errorf("builtin registrar image %s command %v", reg.Image, reg.Command)
				}
				requireArgs(t, reg, "--csi-address=/csi/csi.sock", "--kubelet-registration-path="+pluginSock,
					"--plugin-registration-path=/registration")
				if mount(reg, "/registration") == nil {
					t.Error("builtin registrar does not mount /registration")
				}
			},
		},
		{
			name: "liveness probe off",
			args: []string{"--set", "livenessProbe.enabled=false"},
			check: func(t *testing.T, r rendered) {
				spec := &r.daemonSet(t).Spec.Template.Spec
				for _, c := range spec.Containers {
					if c.Name == "liveness-probe" || c.LivenessProbe != nil && c.Name == "untorn-csi" {
						t.Errorf("container %s still probes liveness", c.Name)
					}
				}
			},
		},
		{
			name: "loop backend, scheduling and overridden sidecars",
			args: []string{"--set", "node.backend=loop", "--set", "node.loop.dir=/srv/untorn",
				"--set", "node.nodeSelector.disk=nvme", "--set", "node.tolerations[0].key=dedicated",
				"--set", "node.tolerations[0].operator=Exists",
				"--set", "sidecars.provisioner.image.repository=local/csi-provisioner", "--set", "sidecars.provisioner.image.tag=v6.3.0",
				"--set", "sidecars.resizer.image.tag=v2.3.0", "--set", "kubeletDir=/var/lib/k0s/kubelet"},
			check: func(t *testing.T, r rendered) {
				spec := &r.daemonSet(t).Spec.Template.Spec
				plugin := container(t, spec, "untorn-csi")
				requireArgs(t, plugin, "--backend=loop", "--loop-dir=/srv/untorn")
				if hasArg(plugin, "--volume-group=untorn") {
					t.Error("loop backend still gets a volume group")
				}
				if v := volume(spec, "loop-dir"); v == nil || v.HostPath == nil || v.HostPath.Path != "/srv/untorn" || mount(plugin, "/srv/untorn") == nil {
					t.Errorf("loop dir volume %+v not mounted", v)
				}
				if spec.NodeSelector["disk"] != "nvme" || len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "dedicated" {
					t.Errorf("nodeSelector %v tolerations %v", spec.NodeSelector, spec.Tolerations)
				}
				if img := container(t, spec, "csi-provisioner").Image; img != "local/csi-provisioner:v6.3.0" {
					t.Errorf("provisioner image %s", img)
				}
				ctrl := r.deployment(t, release+"-controller")
				if img := container(t, &ctrl.Spec.Template.Spec, "csi-resizer").Image; img != "registry.k8s.io/sig-storage/csi-resizer:v2.3.0" {
					t.Errorf("resizer image %s", img)
				}
				requireArgs(t, container(t, spec, "node-driver-registrar"),
					"--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/untorn.csi.dev/csi.sock")
				if m := mount(plugin, "/var/lib/k0s/kubelet"); m == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
					t.Errorf("custom kubelet dir mount %+v", m)
				}
			},
		},
		{
			name: "cert-manager and failurePolicy Ignore",
			args: []string{"--set", "webhook.certManager.enabled=true", "--set", "webhook.failurePolicy=Ignore"},
			check: func(t *testing.T, r rendered) {
				name := release + "-webhook"
				mwc := r.find(t, "MutatingWebhookConfiguration", name).(*admissionregistrationv1.MutatingWebhookConfiguration)
				if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != namespace+"/"+name {
					t.Errorf("inject-ca-from %q", got)
				}
				w := mwc.Webhooks[0]
				if len(w.ClientConfig.CABundle) != 0 || *w.FailurePolicy != admissionregistrationv1.Ignore {
					t.Errorf("caBundle %d bytes, failurePolicy %v", len(w.ClientConfig.CABundle), *w.FailurePolicy)
				}
				if r.has("Secret", name+"-tls") {
					t.Error("chart renders its own certificate although cert-manager issues it")
				}
				cert := r.find(t, "Certificate", name).(map[string]any)
				spec := cert["spec"].(map[string]any)
				if spec["secretName"] != name+"-tls" || !containsAny(spec["dnsNames"], name+"."+namespace+".svc") {
					t.Errorf("certificate spec %v", spec)
				}
				if !r.has("Issuer", name+"-ca") || !r.has("Certificate", name+"-ca") {
					t.Error("no CA issuer chain rendered")
				}
			},
		},
		{
			name: "webhook off",
			args: []string{"--set", "webhook.enabled=false"},
			check: func(t *testing.T, r rendered) {
				if r.has("MutatingWebhookConfiguration", release+"-webhook") || r.has("Deployment", release+"-webhook") {
					t.Error("webhook rendered although disabled")
				}
			},
		},
		{
			name: "custom storage class",
			args: []string{"-f", writeValues(t, `storageClasses:
  - name: pg-ext4-8k
    isDefault: true
    reclaimPolicy: Retain
    allowVolumeExpansion: true
    volumeBindingMode: WaitForFirstConsumer
    parameters: {fsType: ext4, atomicWriteUnit: "8192", clusterSize: 64Ki, atomicPolicy: prefer}
`)},
			check: func(t *testing.T, r rendered) {
				sc := r.find(t, "StorageClass", "pg-ext4-8k").(*storagev1.StorageClass)
				if sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
					t.Error("default class annotation missing")
				}
				got, err := driver.ValidateCreateParameters(sc.Parameters)
				if err != nil || got[driver.ParamClusterSize] != "65536" || got[driver.ParamAtomicWriteUnit] != "8192" {
					t.Errorf("driver: %v, %v", got, err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, render(t, tc.args...))
		})
	}
}

func containsAny(list any, s string) bool {
	l, _ := list.([]any)
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

func writeValues(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSchemaRejectsBadValues: wrong values fail helm template (as they fail
// helm install) with a message naming the offending key.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name, key string
		args      []string
	}{
		{"unknown backend", "backend", []string{"--set", "node.backend=zfs"}},
		{"lvm without volume group", "volumeGroup", []string{"--set", "node.lvm.volumeGroup=null"}},
		{"unknown registrar mode", "mode", []string{"--set", "registrar.mode=kubelet"}},
		{"unknown failure policy", "failurePolicy", []string{"--set", "webhook.failurePolicy=Maybe"}},
		{"unknown libc", "defaultLibc", []string{"--set", "webhook.defaultLibc=uclibc"}},
		{"unit not a power of two", "defaultUnit", []string{"--set", "webhook.defaultUnit=12288"}},
		{"misspelt top-level key", "storageClass", []string{"--set", "storageClass=x"}},
		{"bad fsType", "fsType", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=btrfs"}},
		{"bad atomicWriteUnit", "atomicWriteUnit", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=xfs",
			"--set-string", "storageClasses[0].parameters.atomicWriteUnit=12Ki"}},
		{"unknown parameter", "mkfsOptions", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=xfs",
			"--set", "storageClasses[0].parameters.mkfsOptions=-K"}},
		{"bad atomicSource", "atomicSource", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=xfs",
			"--set", "storageClasses[0].parameters.atomicSource=software"}},
		{"clusterSize on xfs", "clusterSize", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=xfs",
			"--set", "storageClasses[0].parameters.clusterSize=64Ki"}},
		{"immediate binding", "volumeBindingMode", []string{"--set", "storageClasses[0].name=a", "--set", "storageClasses[0].parameters.fsType=xfs",
			"--set", "storageClasses[0].volumeBindingMode=Immediate"}},
		{"bad class name", "name", []string{"--set", "storageClasses[0].name=Bad_Name", "--set", "storageClasses[0].parameters.fsType=xfs"}},
		{"empty sidecar tag", "tag", []string{"--set", "sidecars.resizer.image.tag="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := template(t, tc.args...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.args)
			}
			if !strings.Contains(string(out), "schema") || !strings.Contains(string(out), tc.key) {
				t.Errorf("error does not name the schema and %q:\n%s", tc.key, out)
			}
		})
	}
}

// TestSchemaMatchesDriver: every atomicWriteUnit and clusterSize the schema
// accepts is accepted by the driver's own validation.
func TestSchemaMatchesDriver(t *testing.T) {
	raw, err := os.ReadFile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]struct {
			Enum []string `json:"enum"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	units, clusters := schema.Defs["atomicWriteUnit"].Enum, schema.Defs["clusterSize"].Enum
	if len(units) == 0 || len(clusters) == 0 {
		t.Fatal("schema has no atomicWriteUnit or clusterSize enum")
	}
	for _, u := range units {
		if _, err := driver.ValidateCreateParameters(map[string]string{"fsType": "xfs", "atomicWriteUnit": u}); err != nil {
			t.Errorf("schema accepts atomicWriteUnit %q, the driver does not: %v", u, err)
		}
	}
	for _, c := range clusters {
		if _, err := driver.ValidateCreateParameters(map[string]string{"fsType": "ext4", "atomicWriteUnit": "4Ki", "clusterSize": c}); err != nil {
			t.Errorf("schema accepts clusterSize %q, the driver does not: %v", c, err)
		}
	}
}
