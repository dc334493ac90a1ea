// Package testutil holds helpers for root integration tests on real loop
// devices: every resource a helper creates is released by t.Cleanup, also
// when the test fails.
package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips the test when not running as root. CI runs as root and
// fails the run if any test skipped, so a skip here never goes unnoticed.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (real loop devices, mkfs, mount)")
	}
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command with LC_ALL=C and returns its combined output.
func Output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// LoopDevice creates a sparse backing file of size bytes in a temporary
// directory, attaches it with direct I/O and returns the device path. The
// device is detached at cleanup.
func LoopDevice(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	f.Close()
	dev := strings.TrimSpace(Run(t, "losetup", "--find", "--show", "--direct-io=on", img))
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if _, err := Output("losetup", "-d", dev); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not detach %s", dev)
	})
	return dev
}

// Mount mounts dev (formatted as fstype) on a new temporary directory and
// unmounts it at cleanup. It returns the mount point.
func Mount(t testing.TB, dev, fstype string, options ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-t", fstype}
	if len(options) > 0 {
		args = append(args, "-o", strings.Join(options, ","))
	}
	Run(t, "mount", append(args, dev, dir)...)
	t.Cleanup(func() {
		if out, err := Output("umount", dir); err != nil {
			// Lazy unmount so the loop device can still be detached.
			Output("umount", "-l", dir)
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// Filesystem makes a loop device of size bytes, formats it with mkfs.<fstype>
// and the given options, mounts it and returns the mount point and device.
func Filesystem(t testing.TB, size int64, fstype string, mkfsArgs ...string) (dir, dev string) {
	t.Helper()
	dev = LoopDevice(t, size)
	force := "-F"
	if fstype == "xfs" {
		force = "-f"
	}
	Run(t, "mkfs."+fstype, append(append([]string{force, "-q"}, mkfsArgs...), dev)...)
	return Mount(t, dev, fstype), dev
}

// Tmpfs mounts a small tmpfs and returns its path.
func Tmpfs(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	return Mount(t, "tmpfs", "tmpfs", "size=64m")
}

// WaitForFile waits up to timeout for path to exist (a server's socket,
// say) and fails the test when it does not.
func WaitForFile(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
