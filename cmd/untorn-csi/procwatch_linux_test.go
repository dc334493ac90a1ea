package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault-injection test's view of processes, read from /proc: the
// plugin's descendants (to kill it while mkfs runs and to find children
// that outlive a kill of the plugin's process group), loop devices and
// mounts left behind.

// procID names a process across pid reuse: its pid and start time.
type procID struct {
	pid   int
	start uint64
}

// proc is what /proc/<pid>/stat says of a process.
type proc struct {
	procID
	comm  string
	state byte
	ppid  int
	pgid  int
}

func (p proc) String() string {
	return fmt.Sprintf("%s (pid %d, pgid %d, state %c)", p.comm, p.pid, p.pgid, p.state)
}

// readProc parses /proc/<pid>/stat (comm may hold spaces and parentheses:
// it ends at the last ')').
func readProc(pid int) (proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return proc{}, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return proc{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	p := proc{comm: s[open+1 : end], state: f[0][0]}
	p.pid = pid
	var errs [3]error
	p.ppid, errs[0] = strconv.Atoi(f[1])
	p.pgid, errs[1] = strconv.Atoi(f[2])
	p.start, errs[2] = strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return p, nil
}

// alive reports whether the process id names still runs (a zombie has
// finished; its parent has not reaped it yet).
func alive(id procID) (proc, bool) {
	p, err := readProc(id.pid)
	if err != nil || p.start != id.start || p.state == 'Z' || p.state == 'X' {
		return p, false
	}
	return p, true
}

// childrenOf lists the children of every thread of pid.
func childrenOf(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, w := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(w); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// watcher follows the descendants of one process and remembers every one
// it has seen, so that a child that escapes its group (setsid, a detached
// mkfs) is still known after the parent died.
type watcher struct {
	root int
	seen map[procID]proc
}

func newWatcher(root int) *watcher { return &watcher{root: root, seen: map[procID]proc{}} }

// scan returns the live descendants of root and records them.
func (w *watcher) scan() []proc {
	var out []proc
	queue := childrenOf(w.root)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		p, err := readProc(pid)
		if err != nil || p.state == 'Z' {
			continue
		}
		w.seen[p.procID] = p
		out = append(out, p)
		queue = append(queue, childrenOf(pid)...)
	}
	return out
}

// findMkfs returns a running mkfs.* among procs.
func findMkfs(procs []proc) (proc, bool) {
	for _, p := range procs {
		if strings.HasPrefix(p.comm, "mkfs.") {
			return p, true
		}
	}
	return proc{}, false
}

// survivors waits up to wait for every process seen by w, every process
// of the killed group pgid and every process running bin to be gone, and
// returns those that are still there. A process killed inside an
// uninterruptible system call dies when the call returns, so they get
// time; a child that left the group never gets the SIGKILL at all.
func survivors(w *watcher, pgid int, bin string, wait time.Duration) []proc {
	deadline := time.Now().Add(wait)
	for {
		left := map[procID]proc{}
		for id := range w.seen {
			if p, ok := alive(id); ok {
				left[id] = p
			}
		}
		for _, p := range allProcs() {
			if p.state == 'Z' {
				continue
			}
			exe, _ := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/exe")
			if p.pgid == pgid || (bin != "" && exe == bin) {
				left[p.procID] = p
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			out := make([]proc, 0, len(left))
			for _, p := range left {
				out = append(out, p)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killSurvivor sends SIGKILL to a process that outlived the kill of its
// group, after checking it is still the same process.
func killSurvivor(p proc) {
	if _, ok := alive(p.procID); ok {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// loopDevicesUnder lists the loop devices whose backing file lies in dir
// (deleted backing files included: the kernel shows them with a
// " (deleted)" suffix).
func loopDevicesUnder(dir string) []string {
	entries, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(e))))
		}
	}
	return out
}

// mountsUnder lists the mount points in /proc/self/mountinfo at or below dir.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space...) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// deviceHolders says who keeps a block device busy: processes whose
// mount namespace mounts it (a namespace made while it was mounted keeps
// its own copy of the mount) and processes holding it open.
func deviceHolders(dev string) []string {
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		return []string{err.Error()}
	}
	majmin := fmt.Sprintf("%d:%d", st.Rdev>>8&0xfff, st.Rdev&0xff|st.Rdev>>12&0xfff00)
	var out []string
	namespaces := map[string]bool{}
	for _, p := range allProcs() {
		pid := strconv.Itoa(p.pid)
		ns, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
		if !namespaces[ns] {
			namespaces[ns] = true
			if b, err := os.ReadFile("/proc/" + pid + "/mountinfo"); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if f := strings.Fields(l); len(f) > 4 && f[2] == majmin {
						out = append(out, fmt.Sprintf("%s mounts it at %s in %s", p, unescapeMountinfo(f[4]), ns))
					}
				}
			}
		}
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/" + pid + "/fd/" + fd.Name()); l == dev {
				out = append(out, fmt.Sprintf("%s has it open", p))
			}
		}
	}
	return out
}

// TestSurvivorsFindsEscapedChild checks the fault test's own harness: a
// child that left the process group (setsid) outlives a kill of the
// group, and survivors reports it (and only it).
func TestSurvivorsFindsEscapedChild(t *testing.T) {
	cmd := exec.Command("sh", "-c", "setsid sleep 60 & sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(cmd.Process.Pid)
	t.Cleanup(func() {
		for id := range w.seen {
			if p, ok := alive(id); ok {
				killSurvivor(p)
			}
		}
	})
	sleeping := func() int {
		n := 0
		for _, p := range w.scan() {
			if p.comm == "sleep" {
				n++
			}
		}
		return n
	}
	for i := 0; sleeping() < 2; i++ {
		if i == 500 {
			t.Fatalf("the shell's two sleeps did not appear: %v", w.seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	left := survivors(w, cmd.Process.Pid, "", 2*time.Second)
	if len(left) != 1 || left[0].comm != "sleep" || left[0].pgid == cmd.Process.Pid {
		t.Fatalf("survivors %v, want the one sleep that left the group", left)
	}
	killSurvivor(left[0])
	if left := survivors(w, cmd.Process.Pid, "", 5*time.Second); len(left) != 0 {
		t.Errorf("still alive after SIGKILL: %v", left)
	}
}
