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

const pgBin = "/usr/lib/postgresql/15/bin"

// pgInstance is a private PostgreSQL 15 cluster on a unix socket.
type pgInstance struct {
	u          dbUser
	data, sock string
	port       int
}

func (pg pgInstance) settings() []string {
	return []string{"-c", "full_page_writes=off", "-c", "port=" + strconv.Itoa(pg.port),
		"-c", "listen_addresses=", "-c", "unix_socket_directories=" + pg.sock,
		"-c", "shared_buffers=16MB", "-c", "checkpoint_timeout=30s", "-c", "fsync=on"}
}

func (pg pgInstance) client(t *testing.T, name string, args ...string) string {
	t.Helper()
	return pg.u.run(t, nil, filepath.Join(pgBin, name),
		append([]string{"-h", pg.sock, "-p", strconv.Itoa(pg.port), "-U", "postgres"}, args...)...)
}

func (pg pgInstance) waitReady(t *testing.T) {
	waitFor(t, "postgres to accept connections", 60*time.Second, func() bool {
		return pg.u.command(nil, filepath.Join(pgBin, "pg_isready"), "-q", "-h", pg.sock,
			"-p", strconv.Itoa(pg.port)).Run() == nil
	})
}

func (pg pgInstance) stop(t *testing.T, mode string) {
	pg.u.command(nil, filepath.Join(pgBin, "pg_ctl"), "stop", "-D", pg.data, "-m", mode, "-w", "-t", "60").Run()
}

// TestPostgres runs Debian's PostgreSQL 15 unmodified under the shim on an
// XFS loop volume with full_page_writes=off and data checksums, through
// pgbench -i and a short pgbench: every aligned 8 KiB write to a relation
// file under base/ must have gone out with RWF_ATOMIC (strace -y proof and
// the shim's counters), and pg_amcheck must find nothing after a restart.
func TestPostgres(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Fatalf("PostgreSQL 15 is not installed (hack/deps/shim.txt lists postgresql-15): %v", err)
	}
	u := lookupUser(t, "postgres")
	mnt, _ := testutil.Filesystem(t, 1<<30, "xfs")
	pg := pgInstance{u: u, data: ownedDir(t, u, filepath.Join(mnt, "pgdata")),
		sock: ownedDir(t, u, filepath.Join(mnt, "sock")), port: 50000 + os.Getpid()%10000}
	stats := statsDir(t)
	if err := os.Chmod(filepath.Dir(stats), 0o755); err != nil {
		t.Fatal(err)
	}
	traceDir := ownedDir(t, u, filepath.Join(t.TempDir(), "trace"))
	u.run(t, nil, filepath.Join(pgBin, "initdb"), "-k", "-D", pg.data, "-U", "postgres", "--auth=trust", "-N")
	t.Cleanup(func() {
		pg.stop(t, "immediate")
		waitForExit(pg.data)
	})

	lib := filepath.Join(out, "glibc/libuntorn.so")
	// 1. Under strace (seccomp filter: only the traced calls stop).
	sargs := append([]string{"-ff", "-qq", "-y", "--seccomp-bpf", "-e", "trace=pwrite64,pwritev2,pwritev",
		"-o", filepath.Join(traceDir, "pg"), "-u", "postgres",
		"-E", "LD_PRELOAD=" + lib, "-E", "UNTORN_STATS_DIR=" + stats, "-E", "UNTORN_UNIT=8192",
		filepath.Join(pgBin, "postgres"), "-D", pg.data}, pg.settings()...)
	srv := exec.Command("strace", sargs...)
	srv.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
	logf, err := os.Create(filepath.Join(t.TempDir(), "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	pg.waitReady(t)
	pg.client(t, "pgbench", "-i", "-s", "2", "-q", "postgres")
	pg.client(t, "pgbench", "-c", "4", "-j", "2", "-T", "5", "postgres")
	pg.client(t, "psql", "-qAt", "-c", "CHECKPOINT", "postgres")
	pg.stop(t, "fast")
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		srv.Process.Kill()
		t.Fatal("postgres under strace did not stop")
	}
	logf.Close()

	st := readStats(t, stats, "postgres")
	base := classifyStrace(t, filepath.Join(traceDir, "pg"), regexp.MustCompile(`/pgdata/base/\d+/\d+(\.\d+)?$`), 8192)
	wal := classifyStrace(t, filepath.Join(traceDir, "pg"), regexp.MustCompile(`/pgdata/pg_wal/`), 8192)
	t.Logf("relation files under base/: %d atomic 8 KiB writes, %d plain aligned 8 KiB writes, fraction atomic %s, %d other writes",
		base.atomic, base.plain, fraction(base), base.otherSizes)
	t.Logf("pg_wal: %d atomic 8 KiB pieces, %d plain aligned 8 KiB writes", wal.atomic, wal.plain)
	t.Logf("shim counters over %d postgres processes: atomic_writes=%d atomic_syscalls=%d split=%d passthrough=%v",
		st.processesMerged, st.AtomicWrites, st.AtomicSyscalls, st.SplitWrites, st.Passthrough)
	if base.atomic == 0 || base.plain != 0 {
		t.Errorf("relation page writes: %d atomic, %d without RWF_ATOMIC; want all atomic", base.atomic, base.plain)
	}
	if st.AtomicSyscalls < uint64(base.atomic) || st.WriteErrors != 0 || st.StrictFailures != 0 ||
		st.Passthrough["atomic_error"] != 0 || st.Passthrough["unit_out_of_range"] != 0 {
		t.Errorf("counters: %+v", st)
	}

	// 2. Restart under the shim in strict mode and check every relation.
	srv2 := u.command([]string{"LD_PRELOAD=" + lib, "UNTORN_STATS_DIR=" + stats, "UNTORN_UNIT=8192", "UNTORN_MODE=strict"},
		filepath.Join(pgBin, "pg_ctl"), "start", "-w", "-D", pg.data, "-l", filepath.Join(pg.sock, "log"),
		"-o", strings.Join(quoteAll(pg.settings()), " "))
	if b, err := srv2.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, b)
	}
	pg.waitReady(t)
	rows := pg.client(t, "psql", "-qAt", "-c", "SELECT count(*) FROM pgbench_accounts", "postgres")
	if strings.TrimSpace(rows) != "200000" {
		t.Errorf("pgbench_accounts has %q rows, want 200000", rows)
	}
	t.Log(pg.client(t, "pg_amcheck", "--install-missing", "--heapallindexed", "--all"))
	pg.client(t, "pgbench", "-c", "2", "-T", "3", "postgres")
	pg.stop(t, "fast")
}

// quoteAll quotes pg_ctl -o arguments for the postmaster's option parser.
func quoteAll(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"=") && !strings.HasPrefix(a, "-") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return q
}

// waitForExit waits until no postmaster runs on data.
func waitForExit(data string) {
	for i := 0; i < 100 && procsAlive("postgres", data); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}
