package examples

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/untorn/untorn/internal/testutil"
)

// guard is an example's database container command: a shell script that
// decides whether the torn-page defence may be switched off, then execs the
// image's docker-entrypoint.sh.
type guard struct {
	file, dataVar, page, off, on, dbCmd string
}

var guards = []guard{
	{file: "postgres.yaml", dataVar: "PGDATA", page: "8192", off: "full_page_writes=off", on: "full_page_writes=on", dbCmd: "postgres"},
	{file: "mariadb.yaml", dataVar: "MARIADB_DATADIR", page: "16384", off: "--innodb-doublewrite=OFF", on: "--innodb-doublewrite=ON", dbCmd: "mariadbd"},
}

// command returns the container's command and args from the example.
func (g guard) command(t *testing.T) (cmd, args []string) {
	t.Helper()
	raw, err := os.ReadFile(g.file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var sts appsv1.StatefulSet
		if err := yaml.UnmarshalStrict(doc, &sts); err != nil || sts.Kind != "StatefulSet" {
			continue
		}
		c := sts.Spec.Template.Spec.Containers[0]
		return c.Command, c.Args
	}
	t.Fatalf("%s has no StatefulSet", g.file)
	return nil, nil
}

// run runs the example's command as the container would, with a stub
// docker-entrypoint.sh that records its arguments, the data directory under
// vol and env added to a minimal environment. It returns the arguments the
// database would get and the script's log.
func (g guard) run(t *testing.T, vol string, env ...string) (dbArgs []string, log string) {
	t.Helper()
	cmd, args := g.command(t)
	if len(cmd) < 3 || cmd[0] != "sh" || cmd[1] != "-c" {
		t.Fatalf("%s: command %q is not a sh -c guard", g.file, cmd)
	}
	stub := t.TempDir()
	out := filepath.Join(stub, "args")
	if err := os.WriteFile(filepath.Join(stub, "docker-entrypoint.sh"),
		[]byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > \""+out+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := exec.Command("sh", append(cmd[1:], args...)...)
	c.Env = append([]string{"PATH=" + stub + ":/usr/local/bin:/usr/bin:/bin", "TMPDIR=" + t.TempDir(),
		g.dataVar + "=" + filepath.Join(vol, "data")}, env...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s: guard failed: %v\n%s", g.file, err, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("%s: the guard did not start the database: %v\n%s", g.file, err, stderr.String())
	}
	return strings.Split(strings.TrimSuffix(string(got), "\n"), "\n"), stderr.String()
}

// check asserts the database is started with want (g.off or g.on), its
// other arguments unchanged, a log line that says so, and nothing left in vol.
func (g guard) check(t *testing.T, vol string, dbArgs []string, log, want, why string) {
	t.Helper()
	_, args := g.command(t)
	wantArgs := []string{g.dbCmd}
	for _, a := range args {
		if a == g.off {
			a = want
		}
		wantArgs = append(wantArgs, a)
	}
	if strings.Join(dbArgs, " ") != strings.Join(wantArgs, " ") {
		t.Errorf("database started with %q, want %q (log %q)", dbArgs, wantArgs, log)
	}
	if !strings.Contains(log, "untorn: ") || !strings.Contains(log, "starting with "+want) || !strings.Contains(log, why) {
		t.Errorf("log %q does not say it starts with %s because %q", log, want, why)
	}
	if left, _ := os.ReadDir(vol); len(left) != 0 {
		t.Errorf("the guard left %v on the volume", left)
	}
}

// Without the shim (webhook down with failurePolicy Ignore, label removed,
// a broken LD_PRELOAD) the database keeps its torn-page defence.
func TestGuardKeepsDefenceWithoutShim(t *testing.T) {
	for _, g := range guards {
		t.Run(g.file, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				env  []string
				why  string
			}{
				{"no LD_PRELOAD", nil, "LD_PRELOAD is empty"},
				{"wrong unit", []string{"LD_PRELOAD=/untorn/glibc/libuntorn.so", "UNTORN_UNIT=4096"}, "not the page size " + g.page},
				{"no unit", []string{"LD_PRELOAD=/untorn/glibc/libuntorn.so"}, "UNTORN_UNIT is ''"},
				{"library missing", []string{"LD_PRELOAD=/nonexistent/libuntorn.so", "UNTORN_UNIT=" + g.page}, "did not load"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					vol := t.TempDir()
					dbArgs, log := g.run(t, vol, tc.env...)
					g.check(t, vol, dbArgs, log, g.on, tc.why)
				})
			}
		})
	}
}

var (
	shimOnce sync.Once
	shimLib  string
	shimErr  error
)

// realShim builds the glibc preload library as the image does.
func realShim(t *testing.T) string {
	t.Helper()
	shimOnce.Do(func() {
		dir, err := os.MkdirTemp("", "untorn-guard-shim-")
		if err != nil {
			shimErr = err
			return
		}
		out, err := exec.Command("nice", "make", "-s", "-C", "../../pkg/atomic/shim", "OUT="+dir, "glibc").CombinedOutput()
		if err != nil {
			shimErr = &exec.Error{Name: "make glibc: " + string(out), Err: err}
			return
		}
		shimLib = filepath.Join(dir, "glibc", "libuntorn.so")
	})
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	return shimLib
}

// With the real shim the guard switches the defence off only on a volume
// that makes the page write atomic (XFS on a loop device), and keeps it on
// where the filesystem gives no atomic writes or the shim is switched off.
func TestGuardWithRealShim(t *testing.T) {
	testutil.RequireRoot(t)
	lib := realShim(t)
	xfs, _ := testutil.Filesystem(t, 512<<20, "xfs")
	plain := testutil.Tmpfs(t)
	for _, g := range guards {
		t.Run(g.file, func(t *testing.T) {
			env := []string{"LD_PRELOAD=" + lib, "UNTORN_UNIT=" + g.page}
			vol := filepath.Join(xfs, strings.TrimSuffix(g.file, ".yaml"))
			if err := os.Mkdir(vol, 0o755); err != nil {
				t.Fatal(err)
			}
			dbArgs, log := g.run(t, vol, env...)
			_, args := g.command(t)
			if want := append([]string{g.dbCmd}, args...); strings.Join(dbArgs, " ") != strings.Join(want, " ") {
				t.Errorf("on an atomic volume the database started with %q, want %q (log %q)", dbArgs, want, log)
			}
			if !strings.Contains(log, "takes atomic "+g.page+"-byte writes: starting with "+g.off) {
				t.Errorf("log %q does not say why the defence is off", log)
			}
			if left, _ := os.ReadDir(vol); len(left) != 0 {
				t.Errorf("the guard left %v on the volume", left)
			}

			dbArgs, log = g.run(t, vol, append(env, "UNTORN_MODE=off")...)
			g.check(t, vol, dbArgs, log, g.on, "was not atomic")

			dbArgs, log = g.run(t, plain, env...)
			g.check(t, plain, dbArgs, log, g.on, "was not atomic")
		})
	}
}
