package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
	untorn "github.com/untorn/untorn/pkg/atomic"
)

// buildCLI builds untornctl into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "untornctl")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	testutil.Run(t, gobin, "build", "-o", bin, ".")
	return bin
}

// exec runs the binary and returns its exit code and stdout.
func execCLI(t *testing.T, bin string, args ...string) (int, []byte) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	}
	t.Fatalf("%s: %v", bin, err)
	return 0, nil
}

func TestBinaryEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildCLI(t)

	// XFS on a loop device, formatted with the planned command.
	xdev := testutil.LoopDevice(t, 1<<30)
	code, out := execCLI(t, bin, "probe", xdev, "--json")
	var pr probeResult
	if err := json.Unmarshal(out, &pr); code != 0 || err != nil || pr.Name != filepath.Base(xdev) || pr.HardwareAtomic {
		t.Fatalf("probe %s: exit %d %v\n%s", xdev, code, err, out)
	}
	code, out = execCLI(t, bin, "plan", xdev, "--fs", "xfs", "--unit", "16Ki", "--json")
	var p untorn.Plan
	if err := json.Unmarshal(out, &p); code != 0 || err != nil {
		t.Fatalf("plan: exit %d %v\n%s", code, err, out)
	}
	testutil.Run(t, p.MkfsProgram, append([]string{"-q"}, p.MkfsArgs...)...)
	xdir := testutil.Mount(t, xdev, "xfs", p.MountOptions...)

	// ext4 on a loop device: require refuses (exit 2), prefer plans plain.
	edev := testutil.LoopDevice(t, 1<<30)
	if code, _ := execCLI(t, bin, "plan", edev, "--fs", "ext4", "--unit", "16Ki"); code != exitUsage {
		t.Errorf("ext4 require plan on loop: exit %d, want %d", code, exitUsage)
	}
	testutil.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "bigalloc", "-C", "65536", edev)
	edir := testutil.Mount(t, edev, "ext4")

	tests := []struct {
		name   string
		args   []string
		code   int
		atomic bool
	}{
		{"xfs 16Ki", []string{"verify", xdir, "--unit", "16Ki", "--json"}, exitOK, true},
		{"xfs default unit", []string{"verify", "--json", xdir}, exitOK, true},
		{"xfs above max", []string{"verify", xdir, "--unit", "1Gi", "--json"}, exitNotAtomic, false},
		{"ext4 bigalloc", []string{"verify", edir, "--unit", "16Ki", "--json"}, exitNotAtomic, false},
		{"ext4 default unit", []string{"verify", edir, "--json"}, exitNotAtomic, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := execCLI(t, bin, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\n%s", code, tt.code, out)
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, k := range []string{"atomic", "unitMin", "unitMax"} {
				if _, ok := m[k]; !ok {
					t.Errorf("verify JSON lacks %q", k)
				}
			}
			if m["atomic"] != tt.atomic || (!tt.atomic && m["reason"] == nil) {
				t.Errorf("verify JSON %s", out)
			}
			t.Logf("untornctl %v:\n%s", tt.args, out)
		})
	}
	// Human output: same exit codes.
	if code, out := execCLI(t, bin, "verify", xdir); code != exitOK || len(out) == 0 {
		t.Errorf("human verify xfs: exit %d", code)
	}
	if code, _ := execCLI(t, bin, "verify", edir); code != exitNotAtomic {
		t.Errorf("human verify ext4: exit %d", code)
	}
	if code, _ := execCLI(t, bin, "verify", filepath.Join(xdir, "missing")); code != exitUsage {
		t.Errorf("verify of a missing path: exit %d", code)
	}
	if code, _ := execCLI(t, bin, "verify"); code != exitUsage {
		t.Errorf("verify without a path: exit %d", code)
	}
}
