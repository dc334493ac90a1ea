package shim

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

// ioUringSysctl is the kernel switch for io_uring (0 all, 1 privileged or
// kernel.io_uring_group only, 2 nobody).
const ioUringSysctl = "/proc/sys/kernel/io_uring_disabled"

var straceIocb = regexp.MustCompile(`\{aio_data=[^,]*, (?:aio_key=[^,]*, )?(?:aio_rw_flags=([^,]*), )?aio_lio_opcode=IOCB_CMD_PWRITE, aio_fildes=\d+<([^>]*)>, aio_buf=(?:"(?:[^"\\]|\\.)*"(?:\.\.\.)?|0x[0-9a-f]+), aio_nbytes=(\d+), aio_offset=(\d+)`)

// aioPageWrites counts the 16 KiB page writes in io_submit calls of strace
// -ff -y logs: atomic ones carry RWF_ATOMIC in aio_rw_flags.
func aioPageWrites(t *testing.T, prefix string, pathRE *regexp.Regexp, size int) pageWrites {
	t.Helper()
	files, _ := filepath.Glob(prefix + ".*")
	var pw pageWrites
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range straceIocb.FindAllStringSubmatch(string(b), -1) {
			n, _ := strconv.Atoi(m[3])
			off, _ := strconv.ParseInt(m[4], 10, 64)
			if !pathRE.MatchString(m[2]) || n != size || off%int64(size) != 0 {
				continue
			}
			if straceFlagAt.MatchString(m[1]) {
				pw.atomic++
			} else {
				pw.plain++
			}
		}
	}
	return pw
}

// TestMariaDB runs Debian's MariaDB 10.11 unmodified under the shim on an
// XFS loop volume with innodb_doublewrite=OFF and O_DIRECT, once per write
// path InnoDB has: pwrite from its thread pool (native aio OFF), io_uring
// (native aio ON, the default where the kernel allows io_uring) and libaio
// (native aio ON while io_uring is refused to the mysql user). Every 16 KiB
// page write must have carried RWF_ATOMIC.
func TestMariaDB(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("mariadbd"); err != nil {
		t.Fatalf("mariadbd not installed (hack/deps/shim.txt lists mariadb-server): %v", err)
	}
	u := lookupUser(t, "mysql")
	mnt, _ := testutil.Filesystem(t, 1<<30, "xfs")
	data := ownedDir(t, u, filepath.Join(mnt, "data"))
	run := ownedDir(t, u, filepath.Join(mnt, "run"))
	testutil.Run(t, "mariadb-install-db", "--no-defaults", "--user=mysql", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	lib := filepath.Join(out, "glibc/libuntorn.so")
	sock := filepath.Join(run, "s.sock")
	pages := regexp.MustCompile(`\.ibd$|/ibdata1$|/undo\d+$`)

	uringState, err := os.ReadFile(ioUringSysctl)
	if err != nil {
		t.Fatalf("reading %s: %v", ioUringSysctl, err)
	}
	uringAllowed := strings.TrimSpace(string(uringState)) == "0"

	for i, tc := range []struct {
		name      string
		nativeAIO string
		denyUring bool   // refuse io_uring to the mysql user while InnoDB starts
		wantLog   string // InnoDB's startup line for the path
		strace    bool
	}{
		{"pwrite", "OFF", false, "", true},
		{"io_uring", "ON", false, "InnoDB: Using io_uring", false},
		{"libaio", "ON", true, "InnoDB: Using Linux native AIO", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "io_uring" && !uringAllowed {
				t.Fatalf("%s is %q: io_uring is not available to the mysql user, so the io_uring path cannot be tested; set it to 0",
					ioUringSysctl, strings.TrimSpace(string(uringState)))
			}
			stats := statsDir(t)
			errLog := filepath.Join(run, "err-"+tc.name+".log")
			args := []string{"--no-defaults", "--user=mysql", "--datadir=" + data, "--socket=" + sock,
				"--skip-networking", "--pid-file=" + filepath.Join(run, "pid"), "--log-error=" + errLog,
				"--innodb-doublewrite=OFF", "--innodb-flush-method=O_DIRECT",
				"--innodb-use-native-aio=" + tc.nativeAIO, "--innodb-buffer-pool-size=32M",
				"--innodb-fast-shutdown=0", "--innodb-flush-log-at-trx-commit=1"}
			env := []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/bin", "LD_PRELOAD=" + lib,
				"UNTORN_STATS_DIR=" + stats, "UNTORN_UNIT=16384", "UNTORN_MODE=strict"}
			trace := filepath.Join(ownedDir(t, u, filepath.Join(t.TempDir(), "trace")), "m")
			var cmd *exec.Cmd
			if tc.strace {
				sargs := []string{"-ff", "-qq", "-y", "--seccomp-bpf", "-e", "trace=pwrite64,pwritev2,io_submit", "-o", trace}
				for _, e := range env[2:] {
					sargs = append(sargs, "-E", e)
				}
				cmd = exec.Command("strace", append(append(sargs, "mariadbd"), args...)...)
				cmd.Env = env[:2]
			} else {
				cmd = exec.Command("mariadbd", args...)
				cmd.Env = env
			}
			if tc.denyUring {
				if err := os.WriteFile(ioUringSysctl, []byte("1"), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.WriteFile(ioUringSysctl, uringState, 0o644) })
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() {
				select {
				case <-done:
				default:
					cmd.Process.Kill()
					<-done
				}
			})
			client := func(args ...string) string {
				return testutil.Run(t, "mariadb", append([]string{"--no-defaults", "-S", sock, "-uroot", "-N", "-B"}, args...)...)
			}
			waitFor(t, "mariadbd to accept connections", 60*time.Second, func() bool {
				_, err := testutil.Output("mariadb-admin", "--no-defaults", "-S", sock, "-uroot", "ping")
				return err == nil
			})
			if tc.denyUring {
				os.WriteFile(ioUringSysctl, uringState, 0o644)
			}
			if tc.wantLog != "" {
				b, _ := os.ReadFile(errLog)
				if !strings.Contains(string(b), tc.wantLog) {
					t.Fatalf("InnoDB did not take the %s path: no %q in its log:\n%s", tc.name, tc.wantLog, b)
				}
			}
			table := "t" + strconv.Itoa(i)
			client("-e", "CREATE DATABASE IF NOT EXISTS w; USE w; CREATE TABLE "+table+
				" (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200), KEY(v(20))) ENGINE=InnoDB;"+
				" INSERT INTO "+table+" (v) SELECT REPEAT(CHAR(65+seq%26),200) FROM seq_1_to_40000;"+
				" UPDATE "+table+" SET v=REPEAT('z',150) WHERE id%3=0;")
			written := client("-e", "SHOW GLOBAL STATUS LIKE 'Innodb_pages_written'")
			testutil.Run(t, "mariadb-admin", "--no-defaults", "-S", sock, "-uroot", "shutdown")
			select {
			case <-done:
			case <-time.After(120 * time.Second):
				t.Fatal("mariadbd did not stop")
			}
			st := readStats(t, stats, "mariadbd")
			t.Logf("%s: %s; shim: atomic_writes=%d pwrite(direct fd)=%d aio=%d/%d submits uring=%d/%d submits passthrough=%v",
				tc.name, strings.TrimSpace(written), st.AtomicWrites, st.DirectFDAtomic, st.AioAtomic, st.AioSubmits,
				st.UringAtomic, st.UringSubmits, st.Passthrough)
			for reason, n := range st.Passthrough {
				if n != 0 && reason != "unaligned" {
					t.Errorf("%d writes passed through for %s", n, reason)
				}
			}
			if st.StrictFailures != 0 || st.WriteErrors != 0 {
				t.Errorf("strict failures %d, write errors %d", st.StrictFailures, st.WriteErrors)
			}
			var got uint64
			switch tc.name {
			case "pwrite":
				got = st.DirectFDAtomic
			case "io_uring":
				got = st.UringAtomic
			case "libaio":
				got = st.AioAtomic
			}
			if got == 0 {
				t.Errorf("no atomic page writes on the %s path", tc.name)
			}
			if tc.strace {
				pw := classifyStrace(t, trace, pages, 16384)
				if tc.name == "libaio" {
					pw = aioPageWrites(t, trace, pages, 16384)
				}
				t.Logf("%s: strace: %d atomic 16 KiB page writes, %d without RWF_ATOMIC (fraction %s)", tc.name, pw.atomic, pw.plain, fraction(pw))
				if pw.atomic == 0 || pw.plain != 0 {
					t.Errorf("strace: %d atomic, %d plain 16 KiB page writes; want all atomic", pw.atomic, pw.plain)
				}
			}
		})
	}
}
