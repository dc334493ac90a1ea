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
// page write must have carried RWF_ATOMIC, and CHECK TABLE ... EXTENDED must
// find nothing after a restart. TestMariaDBVersions does the same for 11.8.
func TestMariaDB(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("mariadbd"); err != nil {
		t.Fatalf("mariadbd not installed (hack/deps/shim.txt lists mariadb-server): %v", err)
	}
	mariadbProof(t, hostDB(t, out), "10.11.")
}

var mariadbVersionRE = regexp.MustCompile(`Ver (\d+\.\d+\.\d+)`)

// mariadbProof is the MariaDB proof on h for a server whose version starts
// with want.
func mariadbProof(t *testing.T, h dbHost, want string) {
	t.Helper()
	u := h.user(t, "mysql")
	root := h.rootUser()
	m := mariadbVersionRE.FindStringSubmatch(root.run(t, nil, "mariadbd", "--version"))
	if m == nil || !strings.HasPrefix(m[1]+".", want) {
		t.Fatalf("mariadbd on %s is not MariaDB %s: %v", h.suite, want, m)
	}
	version := m[1]
	data := filepath.Join(h.vol, "data")
	run := filepath.Join(h.vol, "run")
	ownedDir(t, u, h.hostPath(data))
	ownedDir(t, u, h.hostPath(run))
	root.run(t, nil, "mariadb-install-db", "--no-defaults", "--user=mysql", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	sock := filepath.Join(run, "s.sock")
	// Tablespaces: tables, system, undo and the temporary tablespace
	// (Innodb_pages_written counts its pages too).
	pages := regexp.MustCompile(`\.ibd$|/ibdata1$|/ibtmp1$|/undo\d+$`)
	client := func(t *testing.T, args ...string) string {
		t.Helper()
		return root.run(t, nil, "mariadb", append([]string{"--no-defaults", "-S", sock, "-uroot", "-N", "-B"}, args...)...)
	}

	uringState, err := os.ReadFile(ioUringSysctl)
	if err != nil {
		t.Fatalf("reading %s: %v", ioUringSysctl, err)
	}
	uringAllowed := strings.TrimSpace(string(uringState)) == "0"

	// start runs mariadbd under the shim (and strace when trace is set) and
	// returns a function that shuts it down and waits for it.
	start := func(t *testing.T, stats, errLog, trace string, extra ...string) func() {
		t.Helper()
		args := append([]string{"--no-defaults", "--user=mysql", "--datadir=" + data, "--socket=" + sock,
			"--skip-networking", "--pid-file=" + filepath.Join(run, "pid"), "--log-error=" + errLog,
			"--innodb-doublewrite=OFF", "--innodb-flush-method=O_DIRECT", "--innodb-buffer-pool-size=32M",
			"--innodb-fast-shutdown=0", "--innodb-flush-log-at-trx-commit=1"}, extra...)
		env := []string{"LD_PRELOAD=" + h.lib, "UNTORN_STATS_DIR=" + stats, "UNTORN_UNIT=16384", "UNTORN_MODE=strict"}
		var cmd *exec.Cmd
		if trace != "" {
			sargs := []string{"-ff", "-qq", "-y", "--seccomp-bpf", "-e", "trace=pwrite64,pwritev2,pwritev,io_submit,io_uring_enter", "-o", trace}
			for _, e := range env {
				sargs = append(sargs, "-E", e)
			}
			cmd = root.command(nil, "strace", append(append(sargs, "/usr/sbin/mariadbd"), args...)...)
		} else {
			cmd = root.command(env, "mariadbd", args...)
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
		waitFor(t, "mariadbd to accept connections", 60*time.Second, func() bool {
			return root.command(nil, "mariadb-admin", "--no-defaults", "-S", sock, "-uroot", "ping").Run() == nil
		})
		return func() {
			t.Helper()
			root.run(t, nil, "mariadb-admin", "--no-defaults", "-S", sock, "-uroot", "shutdown")
			select {
			case <-done:
			case <-time.After(120 * time.Second):
				t.Fatal("mariadbd did not stop")
			}
		}
	}

	var tables []string
	for i, tc := range []struct {
		name      string
		nativeAIO string
		denyUring bool   // refuse io_uring to the mysql user while InnoDB starts
		wantLog   string // InnoDB's startup line for the path
	}{
		{"pwrite", "OFF", false, ""},
		{"io_uring", "ON", false, "InnoDB: Using io_uring"},
		{"libaio", "ON", true, "InnoDB: Using Linux native AIO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "io_uring" && !uringAllowed {
				t.Fatalf("%s is %q: io_uring is not available to the mysql user, so the io_uring path cannot be tested; set it to 0",
					ioUringSysctl, strings.TrimSpace(string(uringState)))
			}
			stats := filepath.Join(h.stats, tc.name)
			ownedDir(t, u, h.hostPath(stats))
			if err := os.Chmod(h.hostPath(stats), 0o1777); err != nil {
				t.Fatal(err)
			}
			errLog := filepath.Join(run, "err-"+tc.name+".log")
			trace := filepath.Join(h.scratch, "trace-"+tc.name)
			ownedDir(t, u, h.hostPath(trace))
			if tc.denyUring {
				if err := os.WriteFile(ioUringSysctl, []byte("1"), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.WriteFile(ioUringSysctl, uringState, 0o644) })
			}
			stop := start(t, stats, errLog, filepath.Join(trace, "m"), "--innodb-use-native-aio="+tc.nativeAIO)
			if tc.denyUring {
				os.WriteFile(ioUringSysctl, uringState, 0o644)
			}
			if tc.wantLog != "" {
				b, _ := os.ReadFile(h.hostPath(errLog))
				if !strings.Contains(string(b), tc.wantLog) {
					t.Fatalf("InnoDB did not take the %s path: no %q in its log:\n%s", tc.name, tc.wantLog, b)
				}
			}
			table := "t" + strconv.Itoa(i)
			client(t, "-e", "CREATE DATABASE IF NOT EXISTS w; USE w; CREATE TABLE "+table+
				" (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(200), KEY(v(20))) ENGINE=InnoDB;"+
				" INSERT INTO "+table+" (v) SELECT REPEAT(CHAR(65+seq%26),200) FROM seq_1_to_40000;"+
				" UPDATE "+table+" SET v=REPEAT('z',150) WHERE id%3=0;")
			tables = append(tables, "w."+table)
			written, _ := strconv.ParseInt(strings.Fields(client(t, "-e", "SHOW GLOBAL STATUS LIKE 'Innodb_pages_written'") + " x -1")[1], 10, 64)
			stop()
			st := readStats(t, h.hostPath(stats), "mariadbd")
			t.Logf("%s: Innodb_pages_written %d before shutdown; shim: atomic_writes=%d pwrite(direct fd)=%d aio=%d/%d submits uring=%d/%d submits passthrough=%v",
				tc.name, written, st.AtomicWrites, st.DirectFDAtomic, st.AioAtomic, st.AioSubmits,
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
			prefix := h.hostPath(filepath.Join(trace, "m"))
			wt := traceWrites(t, prefix, pages, 16384)
			aio := aioPageWrites(t, prefix, pages, 16384)
			t.Logf("%s: strace: page writes by system call: %s; in io_submit: %d atomic, %d plain; %d io_uring_enter calls",
				tc.name, wt.shapeSummary(), aio.atomic, aio.plain, wt.uringEnters)
			// The line's count: pages strace saw written by pwrite*/io_submit,
			// plus the ring's page writes, which only the shim sees.
			pw := pageWrites{atomic: wt.atomic + aio.atomic + int(st.UringAtomic), plain: wt.plain + aio.plain}
			versionLine(t, "mariadb", version, tc.name+" *.ibd,ibdata1,ibtmp1,undo*", pw)
			if pw.atomic == 0 || pw.plain != 0 {
				t.Errorf("%d atomic, %d plain 16 KiB page writes; want all atomic", pw.atomic, pw.plain)
			}
			if written > int64(pw.atomic) {
				t.Errorf("InnoDB wrote %d pages but only %d atomic page writes were seen: pages went out through a path the shim does not see",
					written, pw.atomic)
			}
		})
	}

	// InnoDB's own check after a restart under the shim: every table, every
	// index, read back from the volume.
	t.Run("check", func(t *testing.T) {
		stats := filepath.Join(h.stats, "check")
		ownedDir(t, u, h.hostPath(stats))
		stop := start(t, stats, filepath.Join(run, "err-check.log"), "")
		res := client(t, "-e", "CHECK TABLE "+strings.Join(tables, ", ")+" EXTENDED")
		t.Logf("CHECK TABLE ... EXTENDED:\n%s", res)
		for _, line := range strings.Split(strings.TrimSpace(res), "\n") {
			if f := strings.Split(line, "\t"); len(f) != 4 || f[2] != "status" || f[3] != "OK" {
				t.Errorf("CHECK TABLE: %q", line)
			}
		}
		if len(strings.Split(strings.TrimSpace(res), "\n")) != len(tables) || len(tables) != 3 {
			t.Errorf("CHECK TABLE checked %q, want the 3 tables %v", res, tables)
		}
		stop()
	})
}
