package shim

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dbUser is the account a database command runs as, on the host or in a
// chroot (root non-empty: the command runs chrooted there).
type dbUser struct {
	name     string
	uid, gid uint32
	root     string
}

func lookupUser(t *testing.T, name string) dbUser {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s (installed with the database package, see hack/deps/shim.txt): %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return dbUser{name: name, uid: uint32(uid), gid: uint32(gid)}
}

// command builds a command that runs as u (chrooted to u.root when set)
// with exactly env (plus LC_ALL=C, PATH and HOME).
func (u dbUser) command(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append([]string{"LC_ALL=C", "PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/tmp"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if u.name != "root" {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
	}
	if u.root != "" {
		cmd.SysProcAttr.Chroot = u.root
		cmd.Dir = "/"
		// exec.Cmd resolves a bare name on the host's PATH: look it up in
		// the chroot instead.
		if !strings.Contains(name, "/") {
			for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
				if _, err := os.Stat(filepath.Join(u.root, d, name)); err == nil {
					cmd.Path = filepath.Join(d, name)
					cmd.Err = nil
					break
				}
			}
		} else {
			cmd.Path, cmd.Err = name, nil
		}
	}
	return cmd
}

// run runs a command as u and fails the test with its output on error.
func (u dbUser) run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := u.command(env, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ownedDir makes dir (and lets u reach it through its parents).
func ownedDir(t *testing.T, u dbUser, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(u.uid), int(u.gid)); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// waitFor polls ok until it returns true or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// pageWrites counts the page writes strace saw to a class of files:
// atomic and plain count pages (size bytes at size-aligned offsets) written
// by completed calls with and without RWF_ATOMIC, so a vectored or
// multi-page write without the flag counts every page it covers;
// otherSizes counts the other completed writes.
type pageWrites struct{ atomic, plain, otherSizes int }

// classifyStrace sums the page writes to files whose path matches pathRE in
// the per-process logs of `strace -ff -y -e trace=pwrite64,pwritev,pwritev2`.
func classifyStrace(t *testing.T, prefix string, pathRE *regexp.Regexp, size int) pageWrites {
	t.Helper()
	return traceWrites(t, prefix, pathRE, size).pageWrites
}

func fraction(pw pageWrites) string {
	if pw.atomic+pw.plain == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.4f", float64(pw.atomic)/float64(pw.atomic+pw.plain))
}

// procsAlive reports whether any process with the given executable name
// whose command line mentions marker is still running.
func procsAlive(exe, marker string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, marker) && strings.Contains(filepath.Base(strings.Fields(cmd + " x")[0]), exe) {
			return true
		}
	}
	return false
}
