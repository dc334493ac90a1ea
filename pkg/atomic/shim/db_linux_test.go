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

// dbUser is an unprivileged account a database runs as.
type dbUser struct {
	name     string
	uid, gid uint32
}

func lookupUser(t *testing.T, name string) dbUser {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s (installed with the database package, see hack/deps/shim.txt): %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return dbUser{name, uint32(uid), uint32(gid)}
}

// command builds a command that runs as u with exactly env (plus LC_ALL=C).
func (u dbUser) command(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append([]string{"LC_ALL=C", "PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/tmp"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
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

// pageWrites classifies the writes to files whose path matches pathRE in the
// per-process logs of `strace -ff -y -e trace=pwrite64,pwritev2,pwrite,...`:
// atomic are completed calls of exactly size bytes carrying RWF_ATOMIC, plain
// are completed size-byte writes at size-aligned offsets without it.
type pageWrites struct{ atomic, plain, otherSizes int }

var (
	straceCall   = regexp.MustCompile(`^(pwrite64|pwritev2|pwritev|write|writev)\((\d+)<([^>]*)>, (.*)\) += (-?\d+)$`)
	straceTail2  = regexp.MustCompile(`, (\d+), (\d+)$`)        // pwrite64: count, offset
	straceTailV2 = regexp.MustCompile(`, \d+, (\d+), ([^,]+)$`) // pwritev2: n, offset, flags
	straceIovLen = regexp.MustCompile(`iov_len=(\d+)`)
	straceFlagAt = regexp.MustCompile(`RWF_ATOMIC|0x40 /\* RWF_\?\?\? \*/`)
)

func classifyStrace(t *testing.T, prefix string, pathRE *regexp.Regexp, size int) pageWrites {
	t.Helper()
	files, err := filepath.Glob(prefix + ".*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no strace logs %s.*", prefix)
	}
	var pw pageWrites
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := straceCall.FindStringSubmatch(line)
			if m == nil || !pathRE.MatchString(m[3]) || strings.HasPrefix(m[5], "-") {
				continue
			}
			res, _ := strconv.Atoi(m[5])
			switch m[1] {
			case "pwrite64":
				a := straceTail2.FindStringSubmatch(m[4])
				if a == nil {
					continue
				}
				n, _ := strconv.Atoi(a[1])
				off, _ := strconv.ParseInt(a[2], 10, 64)
				if n == size && off%int64(size) == 0 && res == size {
					pw.plain++
				} else {
					pw.otherSizes++
				}
			case "pwritev2":
				a := straceTailV2.FindStringSubmatch(m[4])
				if a == nil {
					continue
				}
				total := 0
				for _, l := range straceIovLen.FindAllStringSubmatch(m[4], -1) {
					n, _ := strconv.Atoi(l[1])
					total += n
				}
				off, _ := strconv.ParseInt(a[1], 10, 64)
				aligned := total == size && off%int64(size) == 0 && res == size
				switch {
				case aligned && straceFlagAt.MatchString(a[2]):
					pw.atomic++
				case aligned:
					pw.plain++
				default:
					pw.otherSizes++
				}
			default:
				pw.otherSizes++
			}
		}
	}
	return pw
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
