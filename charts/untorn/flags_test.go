package chart_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestCommandsAcceptRenderedArgs builds the project's commands and runs each
// with the arguments the chart renders for it, followed by -h: the flag
// parser stops at the first flag it does not know, so a zero exit means
// every rendered flag exists.
func TestCommandsAcceptRenderedArgs(t *testing.T) {
	bin := t.TempDir()
	built := map[string]string{}
	command := func(path string) string {
		name := filepath.Base(path)
		if p, ok := built[name]; ok {
			return p
		}
		out := filepath.Join(bin, name)
		cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
		cmd.Dir = repoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
		}
		built[name] = out
		return out
	}
	check := func(t *testing.T, spec *corev1.PodSpec) {
		for _, c := range spec.Containers {
			if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/usr/bin/untorn") {
				continue // an upstream sidecar
			}
			args := make([]string, 0, len(c.Args)+1)
			for _, a := range c.Args {
				args = append(args, strings.ReplaceAll(a, "$(NODE_NAME)", "node-1"))
			}
			out, err := exec.Command(command(c.Command[0]), append(args, "-h")...).CombinedOutput()
			if err != nil {
				t.Errorf("container %s: %s rejects %q: %v\n%s", c.Name, c.Command[0], c.Args, err, out)
			}
		}
	}
	for _, variant := range [][]string{
		nil,
		{"--set", "registrar.mode=builtin", "--set", "node.backend=loop"},
	} {
		r := render(t, variant...)
		check(t, &r.daemonSet(t).Spec.Template.Spec)
		check(t, &r.deployment(t, release+"-controller").Spec.Template.Spec)
		if variant == nil {
			check(t, &r.deployment(t, release+"-webhook").Spec.Template.Spec)
		}
	}
	for _, name := range []string{"untorn-csi", "untorn-registrar", "untorn-webhook"} {
		if _, ok := built[name]; !ok {
			t.Errorf("no rendered container runs %s", name)
		}
	}
}
