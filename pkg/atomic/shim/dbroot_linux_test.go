package shim

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

// dbHost is where a database under test runs: the host system (root "") or
// a Debian chroot with a newer release (hack/dbroot.sh). Paths in vol, lib,
// stats and scratch are as the database sees them; hostPath maps them to the
// test's view.
type dbHost struct {
	root    string // "" for the host system
	suite   string // "bookworm" for the host, else the chroot's suite
	vol     string // the XFS loop volume the data lives on
	lib     string // the glibc build of the shim
	stats   string // the shim's counter directory (mode 1777)
	scratch string // traces and logs, off the data volume
}

func (h dbHost) hostPath(p string) string {
	if h.root == "" {
		return p
	}
	return filepath.Join(h.root, p)
}

// hostDB is the host system with a fresh XFS loop volume.
func hostDB(t *testing.T, out string) dbHost {
	t.Helper()
	mnt, _ := testutil.Filesystem(t, 1<<30, "xfs")
	stats := statsDir(t)
	if err := os.Chmod(filepath.Dir(stats), 0o755); err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	if err := os.Chmod(scratch, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dbHost{suite: "bookworm", vol: mnt, lib: filepath.Join(out, "glibc/libuntorn.so"), stats: stats, scratch: scratch}
}

// dbRootSuites are the chroots the tests use; the first test that needs one
// starts building all of them side by side (on a cold machine that halves
// the wait), later ones find them cached.
var dbRootSuites = []string{"trixie", "sid"}

type dbRootBuild struct {
	done      chan struct{}
	dir, logs string
	err       error
}

var (
	dbRootsOnce sync.Once
	dbRoots     = map[string]*dbRootBuild{}
)

// dbRootDir returns the chroot of suite, built (or found cached) by
// hack/dbroot.sh. A chroot that cannot be built fails the test: the versions
// it holds are supported and must be tested.
func dbRootDir(t *testing.T, suite string) string {
	t.Helper()
	script, err := filepath.Abs("../../../hack/dbroot.sh")
	if err != nil {
		t.Fatal(err)
	}
	dbRootsOnce.Do(func() {
		for _, s := range dbRootSuites {
			b := &dbRootBuild{done: make(chan struct{})}
			dbRoots[s] = b
			go func(s string) {
				defer close(b.done)
				cmd := exec.Command(script, s)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				b.dir, b.logs, b.err = strings.TrimSpace(string(out)), stderr.String(), err
			}(s)
		}
	})
	b, ok := dbRoots[suite]
	if !ok {
		t.Fatalf("no database chroot %q (have %v)", suite, dbRootSuites)
	}
	<-b.done
	if b.err != nil {
		t.Fatalf("building the %s database chroot with %s: %v\n%s", suite, script, b.err, b.logs)
	}
	if _, err := os.Stat(filepath.Join(b.dir, ".done")); err != nil {
		t.Fatalf("%s %s printed %q, not a finished chroot: %v\n%s", script, suite, b.dir, err, b.logs)
	}
	return b.dir
}

// chrootDB gives the test a private view of the cached chroot of suite: an
// overlay (the cache stays untouched, concurrent tests do not meet), /proc
// and /dev inside it, the glibc shim copied to /untorn/libuntorn.so and a
// fresh XFS loop volume mounted at /vol inside the chroot. Every mount is
// undone and every process left in the chroot is killed at cleanup.
func chrootDB(t *testing.T, out, suite string) dbHost {
	t.Helper()
	lower := dbRootDir(t, suite)
	work := t.TempDir()
	root := filepath.Join(work, "root")
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(args ...string) {
		t.Helper()
		testutil.Run(t, "mount", args...)
		target := args[len(args)-1]
		t.Cleanup(func() {
			// Processes in the chroot (a database still exiting) first:
			// they would keep the mount busy.
			killChroot(t, root)
			if out, err := testutil.Output("umount", target); err != nil {
				testutil.Output("umount", "-l", target)
				t.Errorf("umount %s: %v %s", target, err, out)
			}
		})
	}
	mount("-t", "overlay", "overlay", "-o", "lowerdir="+lower+",upperdir="+filepath.Join(work, "upper")+
		",workdir="+filepath.Join(work, "work"), root)
	t.Cleanup(func() { killChroot(t, root) })
	mount("-t", "proc", "proc", filepath.Join(root, "proc"))
	mount("--bind", "/dev", filepath.Join(root, "dev"))

	h := dbHost{root: root, suite: suite, vol: "/vol", lib: "/untorn/libuntorn.so",
		stats: "/untorn/stats", scratch: "/untorn/scratch"}
	for _, d := range []string{h.vol, h.stats, h.scratch} {
		if err := os.MkdirAll(h.hostPath(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{h.stats, h.scratch} {
		if err := os.Chmod(h.hostPath(d), 0o1777); err != nil {
			t.Fatal(err)
		}
	}
	lib, err := os.ReadFile(filepath.Join(out, "glibc/libuntorn.so"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.hostPath(h.lib), lib, 0o755); err != nil {
		t.Fatal(err)
	}
	dev := testutil.LoopDevice(t, 1<<30)
	testutil.Run(t, "mkfs.xfs", "-f", "-q", dev)
	mount("-t", "xfs", dev, h.hostPath(h.vol))
	return h
}

// killChroot kills every process whose root is the chroot (a database a
// failed test left behind) and waits for them to go.
func killChroot(t *testing.T, root string) {
	for i := 0; i < 100; i++ {
		pids := chrootPids(root)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("processes still running in %s", root)
}

func chrootPids(root string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink(filepath.Join("/proc", e.Name(), "root")); err == nil && r == root {
			pids = append(pids, pid)
		}
	}
	return pids
}

// user looks up a database account in the host's or the chroot's passwd.
func (h dbHost) user(t *testing.T, name string) dbUser {
	t.Helper()
	if h.root == "" {
		u := lookupUser(t, name)
		return u
	}
	f, err := os.Open(h.hostPath("/etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) >= 4 && fs[0] == name {
			uid, _ := strconv.ParseUint(fs[2], 10, 32)
			gid, _ := strconv.ParseUint(fs[3], 10, 32)
			return dbUser{name: name, uid: uint32(uid), gid: uint32(gid), root: h.root}
		}
	}
	t.Fatalf("no user %s in the %s chroot %s (its database package creates it)", name, h.suite, h.root)
	return dbUser{}
}

// root is the superuser on h (for strace, mariadb-install-db, clients).
func (h dbHost) rootUser() dbUser { return dbUser{name: "root", root: h.root} }

// descendants maps every live descendant of pid to its command line (the
// process titles a database sets: "postgres: checkpointer" ...).
func descendants(pid int) map[int]string {
	parent := map[int]int{}
	cmdline := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		fs := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fs) < 2 {
			continue
		}
		parent[p], _ = strconv.Atoi(fs[1])
		c, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmdline[p] = strings.TrimSpace(strings.ReplaceAll(string(c), "\x00", " "))
	}
	out := map[int]string{}
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out[p] = cmdline[p]
				break
			}
		}
	}
	return out
}

// watchTitles records the command lines of pid's descendants every 100 ms
// until the returned function is called, which returns them all: a
// short-lived backend is named too.
func watchTitles(pid int) func() map[int]string {
	var mu sync.Mutex
	seen := map[int]string{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d := descendants(pid)
			mu.Lock()
			for p, c := range d {
				seen[p] = c
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() map[int]string {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// versionLine is the one line each database test prints per version and
// write path: `<db> <version> <path>: <atomic>/<aligned page writes> atomic`.
func versionLine(t *testing.T, db, version, path string, pw pageWrites) {
	t.Helper()
	line := fmt.Sprintf("%s %s %s: %d/%d atomic", db, version, path, pw.atomic, pw.atomic+pw.plain)
	fmt.Println(line)
	t.Log(line)
}
