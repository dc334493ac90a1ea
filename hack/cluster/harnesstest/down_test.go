// Package harnesstest holds the tests of the local cluster harness
// (hack/local-cluster.sh); the harness itself is shell.
package harnesstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proc is a process started by the test, reaped as soon as it exits (a
// zombie would still count as a process of its cgroup).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// gone waits a little for an exit that was already signalled.
func (p *proc) gone() bool {
	select {
	case <-p.done:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// cgroupHierarchy is a cgroup hierarchy the test may create cgroups in: the
// v1 pids hierarchy, or the unified one.
func cgroupHierarchy(t *testing.T) string {
	for _, h := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err == nil {
			return h
		}
	}
	t.Fatal("no cgroup hierarchy at /sys/fs/cgroup")
	return ""
}

// mkCgroup creates dir (and its missing parents, removed again at the end).
func mkCgroup(t *testing.T, dir string) {
	t.Helper()
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append(created, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range created { // deepest first
			_ = os.Remove(d)
		}
	})
}

func moveTo(t *testing.T, cgroup string, p *proc) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(p.pid())), 0o644); err != nil {
		t.Fatalf("move %s into %s: %v", p.name, cgroup, err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDevice attaches a new file under dir to a loop device.
func loopDevice(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "disk.img")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		// only while it is still this file's: down may have detached it
		// and another test attached the device since
		if strings.HasPrefix(loopBackedBy(dev), img) {
			_ = exec.Command("losetup", "-d", dev).Run()
		}
	})
	return dev
}

func loopBackedBy(dev string) string {
	out, _ := exec.Command("losetup", "-n", "-O", "BACK-FILE", dev).Output()
	return strings.TrimSpace(string(out))
}

func mounted(target string) bool {
	return exec.Command("findmnt", "-rn", "--mountpoint", target).Run() == nil
}

// inNamespace waits until p runs sleep in a mount namespace of its own.
func inNamespace(t *testing.T, p *proc) {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; i < 100; i++ {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid()))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.pid()))
		if strings.TrimSpace(string(comm)) == "sleep" && ns != self {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not reach its sleep in a namespace of its own", p.name)
}

// script is the harness under test (LOCAL_CLUSTER_SH runs the test against
// another version of it).
func script() string {
	if s := os.Getenv("LOCAL_CLUSTER_SH"); s != "" {
		return s
	}
	return "../../local-cluster.sh"
}

func down(t *testing.T, env []string) string {
	t.Helper()
	cmd := exec.Command("bash", script(), "down")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("local-cluster.sh down: %v\n%s", err, out.String())
	}
	return out.String()
}

// TestDownTouchesOnlyItsOwn runs "down" on a machine that is also a
// Kubernetes node: processes in another kubelet's kubepods cgroups or in
// another mount namespace, a loop device and a mount that are not the
// cluster's (their paths even share its directory's prefix) must survive,
// both when no cluster is up and when a crashed one is cleaned up; the
// crashed cluster's own processes, loop device and cgroups must go.
func TestDownTouchesOnlyItsOwn(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: cgroups, loop devices, mounts")
	}
	tmp := t.TempDir()
	clusterDir := filepath.Join(tmp, "cluster")
	env := append(os.Environ(), "CLUSTER_DIR="+clusterDir, "UNTORN_CACHE="+filepath.Join(tmp, "cache"))
	cmd := exec.Command("bash", script(), "cgroup")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("local-cluster.sh cgroup: %v", err)
	}
	ownRoot := strings.TrimSpace(string(out))
	if !strings.HasPrefix(ownRoot, "untorn-") || strings.Contains(ownRoot, "/") {
		t.Fatalf("cluster cgroup root %q: want untorn-<hash>", ownRoot)
	}
	h := cgroupHierarchy(t)
	tag := fmt.Sprintf("untorn-harness-test-%d", os.Getpid())

	// Not the cluster's: pods of another kubelet, a process in another mount
	// namespace, one on the host; a loop device and a mount next to the
	// cluster's directory.
	var others []*proc
	for _, cg := range []string{
		filepath.Join(h, "kubepods-"+tag),
		filepath.Join(h, "kubepods", tag, "pod1"),
	} {
		mkCgroup(t, cg)
		p := start(t, "sleep in "+cg, "sleep", "1000")
		moveTo(t, cg, p)
		others = append(others, p)
	}
	otherNS := start(t, "sleep in another mount namespace",
		"unshare", "--mount", "--propagation", "private", "sleep", "1000")
	inNamespace(t, otherNS)
	others = append(others, otherNS, start(t, "sleep on the host", "sleep", "1000"))
	otherDir := clusterDir + "-unrelated"
	otherLoop := loopDevice(t, otherDir)
	run(t, "mkfs.ext4", "-q", otherLoop)
	otherMnt := filepath.Join(otherDir, "mnt")
	if err := os.Mkdir(otherMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", otherLoop, otherMnt)
	t.Cleanup(func() { _ = exec.Command("umount", otherMnt).Run() })

	// The cluster's own: a pod below its cgroup root, a process in a mount
	// namespace with its /var/lib, a loop device backed by a file of its.
	varlib := filepath.Join(clusterDir, "varlib")
	ownLoop := loopDevice(t, varlib)
	ownBacking := loopBackedBy(ownLoop)
	ownCgroup := filepath.Join(h, ownRoot, "kubepods", "besteffort", "pod1")
	mkCgroup(t, ownCgroup)
	ownPod := start(t, "sleep in the cluster's cgroup", "sleep", "1000")
	moveTo(t, ownCgroup, ownPod)
	ownNS := start(t, "sleep in the cluster's mount namespace", "unshare", "--mount", "--propagation", "private",
		"sh", "-c", "mount --bind "+varlib+" /var/lib && exec sleep 1000")
	inNamespace(t, ownNS)

	checkOthers := func(when string) {
		t.Helper()
		for _, p := range others {
			if !p.alive() {
				t.Errorf("%s: %s (pid %d) was killed", when, p.name, p.pid())
			}
		}
		if got := loopBackedBy(otherLoop); got == "" {
			t.Errorf("%s: unrelated loop device %s was detached", when, otherLoop)
		}
		if !mounted(otherMnt) {
			t.Errorf("%s: unrelated mount %s is gone", when, otherMnt)
		}
	}

	// No cluster: down has nothing to do.
	if out := down(t, env); !strings.Contains(out, "no cluster in "+clusterDir) {
		t.Errorf("down with no cluster: output %q does not say there is none", out)
	}
	checkOthers("down with no cluster")
	if !ownPod.alive() || !ownNS.alive() || loopBackedBy(ownLoop) != ownBacking {
		t.Fatal("down with no cluster state touched the test's cluster-owned resources")
	}

	// A crashed cluster (its marker is there, no daemon runs).
	if err := os.WriteFile(filepath.Join(clusterDir, ".untorn-local-cluster"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	down(t, env)
	checkOthers("down of a crashed cluster")
	if !ownPod.gone() {
		t.Errorf("the process in the cluster's cgroup %s survived down", ownCgroup)
	}
	if !ownNS.gone() {
		t.Error("the process in the cluster's mount namespace survived down")
	}
	if got := loopBackedBy(ownLoop); got == ownBacking {
		t.Errorf("the cluster's loop device %s (%s) is still attached", ownLoop, got)
	}
	if _, err := os.Stat(filepath.Join(h, ownRoot)); !os.IsNotExist(err) {
		t.Errorf("the cluster's cgroup root %s is still there (%v)", filepath.Join(h, ownRoot), err)
	}
	if _, err := os.Stat(filepath.Join(h, "kubepods-"+tag)); err != nil {
		t.Errorf("the unrelated cgroup kubepods-%s was removed: %v", tag, err)
	}
}
