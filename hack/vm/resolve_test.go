// Package vm holds the tests of the VM build scripts (hack/vm.sh); the
// scripts themselves are shell.
package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sh runs script in bash after sourcing resolve.sh (with the log and die of
// build.sh); it returns the output and whether the script succeeded.
func sh(t *testing.T, env []string, script string) (string, bool) {
	t.Helper()
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", `set -euo pipefail
log() { printf 'vm: %s\n' "$*" >&2; }
die() { printf 'vm: error: %s\n' "$*" >&2; exit 2; }
VM_SRC=`+here+`
. "$VM_SRC/resolve.sh"
`+script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

func TestNewestVersion(t *testing.T) {
	for _, c := range []struct {
		name, index, re, min, want string
	}{
		// 7.10.1 beats 7.9.3 (not a string order); the 7.11 cloud, rt and
		// arm64 kernels, -dbg, -unsigned and the metapackage are not candidates
		{"newest sid kernel", "sid", "$KERNEL_RE", "$KERNEL_MIN", "linux-image-7.10.1+deb14-amd64 7.10.1-1"},
		{"old kernel names match", "trixie", "$KERNEL_RE", "6.1", "linux-image-6.12.117+deb13-amd64 6.12.117-1"},
		{"no trixie kernel is new enough", "trixie", "$KERNEL_RE", "$KERNEL_MIN", ""},
		{"backports kernel meets the minimum", "backports", "$KERNEL_RE", "$KERNEL_MIN", "linux-image-6.16.12+deb13-amd64 6.16.12-1~bpo13+1"},
		// qemu-system-x86-microvm is another package
		{"sid QEMU", "sid", "$QEMU_PKG", "$QEMU_MIN", "qemu-system-x86 1:11.1.3+ds-1"},
		{"trixie QEMU is too old", "trixie", "$QEMU_PKG", "$QEMU_MIN", ""},
		{"a release candidate of the minimum counts", "backports", "$QEMU_PKG", "$QEMU_MIN", "qemu-system-x86 1:11.1~rc2+ds-1~bpo13+1"},
		{"epoch compares first", "trixie", "$QEMU_PKG", "11.2", "qemu-system-x86 1:10.0.13+ds-0+deb13u1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, ok := sh(t, nil, `newest_version "`+c.re+`" "`+c.min+`" < testdata/Packages.`+c.index)
			if c.want == "" {
				if ok || out != "" {
					t.Fatalf("got %q (success %v), want no match and a failure status", out, ok)
				}
				return
			}
			if !ok || out != c.want {
				t.Fatalf("got %q (success %v), want %q", out, ok, c.want)
			}
		})
	}
}

func TestNewestInSuites(t *testing.T) {
	out, ok := sh(t, nil, `d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
for s in trixie sid backports; do cp testdata/Packages.$s "$d/$s"; done
newest_in_suites "$KERNEL_RE" "$KERNEL_MIN" "$d" trixie backports sid
newest_in_suites "$QEMU_PKG" "$QEMU_MIN" "$d" trixie backports
suite_of qemu-utils 1:10.0.13+ds-0+deb13u1 "$d" sid trixie
if newest_in_suites "$QEMU_PKG" "$QEMU_MIN" "$d" trixie; then echo "trixie has a QEMU >= $QEMU_MIN"; fi`)
	want := "sid linux-image-7.10.1+deb14-amd64 7.10.1-1\n" +
		"backports qemu-system-x86 1:11.1~rc2+ds-1~bpo13+1\n" +
		"trixie"
	if !ok || out != want {
		t.Fatalf("got %q (success %v), want %q", out, ok, want)
	}
}

// mirror builds a file:// mirror of the fixture indexes for trixie and sid.
func mirror(t *testing.T) string {
	t.Helper()
	m := t.TempDir()
	for _, s := range []string{"trixie", "sid"} {
		d := filepath.Join(m, "dists", s, "main", "binary-amd64")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile("testdata/Packages." + s)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("xz", "-c")
		cmd.Stdin = strings.NewReader(string(data))
		xz, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz: %v", err)
		}
		if err := os.WriteFile(filepath.Join(d, "Packages.xz"), xz, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return "file://" + m
}

const show = `echo "KV=$KV QEMU_VERSION=$QEMU_VERSION QEMU_SUITE=$QEMU_SUITE QEMU_KEY=$QEMU_KEY"`

func TestVMResolve(t *testing.T) {
	cache := t.TempDir()
	env := []string{"MIRROR=" + mirror(t), "VM_CACHE=" + cache, "UNTORN_VM_KERNEL=", "UNTORN_VM_QEMU="}
	resolved := "KV=7.10.1+deb14-amd64 QEMU_VERSION=1:11.1.3+ds-1 QEMU_SUITE=sid QEMU_KEY=11.1.3+ds-1"

	// A cold cache: the newest that meets the minimum, printed and recorded.
	out, ok := sh(t, env, "vm_resolve fresh 2>&1\n"+show)
	if !ok || !strings.HasSuffix(out, resolved) ||
		!strings.Contains(out, "guest kernel 7.10.1+deb14-amd64 (newest >= 6.16 in sid); QEMU 1:11.1.3+ds-1 (newest >= 1:11.1 in sid)") {
		t.Fatalf("fresh resolution: got\n%s\nwant it to print and set %s", out, resolved)
	}
	if _, err := os.Stat(filepath.Join(cache, "resolved.env")); err != nil {
		t.Fatalf("resolved.env not written: %v", err)
	}

	// Pins win and are checked against the minimum.
	out, ok = sh(t, append(env, "UNTORN_VM_KERNEL=7.2.13+deb14-amd64", "UNTORN_VM_QEMU=1:11.1.3+ds-1"), "vm_resolve fresh\n"+show)
	if want := "KV=7.2.13+deb14-amd64 QEMU_VERSION=1:11.1.3+ds-1 QEMU_SUITE=sid QEMU_KEY=11.1.3+ds-1"; !ok || !strings.HasSuffix(out, want) || !strings.Contains(out, "pinned by UNTORN_VM_KERNEL") {
		t.Fatalf("pinned: got\n%s\nwant %s", out, want)
	}
	out, ok = sh(t, append(env, "UNTORN_VM_KERNEL=6.12.117+deb13-amd64"), "vm_resolve fresh")
	if ok || !strings.Contains(out, "kernel 6.12.117+deb13-amd64 is older than 6.16") {
		t.Fatalf("a pinned kernel below the minimum: got %q (success %v), want a clear refusal", out, ok)
	}
	out, ok = sh(t, append(env, "UNTORN_VM_QEMU=1:10.0.13+ds-0+deb13u1"), "vm_resolve fresh")
	if ok || !strings.Contains(out, "QEMU 1:10.0.13+ds-0+deb13u1 is older than 1:11.1") {
		t.Fatalf("a pinned QEMU below the minimum: got %q (success %v), want a clear refusal", out, ok)
	}

	// The pins did not replace the recorded resolution; a run (not fresh)
	// keeps it, and so does a build whose mirror does not answer.
	out, ok = sh(t, append(env, "MIRROR=file:///nonexistent"), "vm_resolve recorded\n"+show)
	if !ok || !strings.HasSuffix(out, resolved) {
		t.Fatalf("run after the build: got\n%s\nwant %s", out, resolved)
	}
	out, ok = sh(t, append(env, "MIRROR=file:///nonexistent"), "vm_resolve fresh 2>&1\n"+show)
	if !ok || !strings.HasSuffix(out, resolved) || !strings.Contains(out, "does not answer") {
		t.Fatalf("unreachable mirror: got\n%s\nwant a warning and %s", out, resolved)
	}
	// With nothing recorded, an unreachable mirror is an error that says
	// what to do.
	out, ok = sh(t, []string{"MIRROR=file:///nonexistent", "VM_CACHE=" + t.TempDir(), "UNTORN_VM_KERNEL=", "UNTORN_VM_QEMU="}, "vm_resolve fresh")
	if ok || !strings.Contains(out, "UNTORN_VM_KERNEL and UNTORN_VM_QEMU") {
		t.Fatalf("unreachable mirror, cold cache: got %q (success %v), want an error naming the pins", out, ok)
	}
}

// TestVMResolveAdoptsCachedQEMU: a QEMU chroot cached under its old fixed
// name serves when it holds the resolved version, and only then.
func TestVMResolveAdoptsCachedQEMU(t *testing.T) {
	cache := t.TempDir()
	old := filepath.Join(cache, "qemu-trixie-sid-1")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		".done":         "",
		".qemu-version": "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)\n",
	} {
		if err := os.WriteFile(filepath.Join(old, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"MIRROR=" + mirror(t), "VM_CACHE=" + cache, "UNTORN_VM_KERNEL="}
	if out, ok := sh(t, append(env, "UNTORN_VM_QEMU="), "vm_resolve fresh"); !ok {
		t.Fatalf("vm_resolve: %s", out)
	}
	if got, err := os.Readlink(filepath.Join(cache, "qemu-11.1.3+ds-1")); err != nil || got != "qemu-trixie-sid-1" {
		t.Fatalf("qemu-11.1.3+ds-1 -> %q (%v), want the cached qemu-trixie-sid-1", got, err)
	}
	// another version is not adopted
	if out, ok := sh(t, append(env, "UNTORN_VM_QEMU=1:11.2.0+ds-1"), "vm_resolve fresh"); !ok {
		t.Fatalf("vm_resolve: %s", out)
	}
	if _, err := os.Lstat(filepath.Join(cache, "qemu-11.2.0+ds-1")); !os.IsNotExist(err) {
		t.Fatalf("qemu-11.2.0+ds-1 exists (%v); the cached 11.1.3 chroot must not stand in for it", err)
	}
}
