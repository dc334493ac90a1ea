package shim

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/untorn/untorn/internal/testutil"
)

// pgInstance is a private PostgreSQL cluster on a unix socket, on the host
// or in a chroot (u.root); bin is the version's binary directory there.
type pgInstance struct {
	u          dbUser
	bin        string
	data, sock string // as the server sees them
	port       int
	extra      []string // settings of the run: io_method=...
}

func (pg pgInstance) settings() []string {
	s := []string{"-c", "full_page_writes=off", "-c", "port=" + strconv.Itoa(pg.port),
		"-c", "listen_addresses=", "-c", "unix_socket_directories=" + pg.sock,
		"-c", "shared_buffers=16MB", "-c", "checkpoint_timeout=30s", "-c", "fsync=on"}
	for _, e := range pg.extra {
		s = append(s, "-c", e)
	}
	return s
}

func (pg pgInstance) client(t *testing.T, name string, args ...string) string {
	t.Helper()
	return pg.u.run(t, nil, filepath.Join(pg.bin, name),
		append([]string{"-h", pg.sock, "-p", strconv.Itoa(pg.port), "-U", "postgres"}, args...)...)
}

func (pg pgInstance) waitReady(t *testing.T) {
	waitFor(t, "postgres to accept connections", 60*time.Second, func() bool {
		return pg.u.command(nil, filepath.Join(pg.bin, "pg_isready"), "-q", "-h", pg.sock,
			"-p", strconv.Itoa(pg.port)).Run() == nil
	})
}

func (pg pgInstance) stop(t *testing.T, mode string) {
	pg.u.command(nil, filepath.Join(pg.bin, "pg_ctl"), "stop", "-D", pg.data, "-m", mode, "-w", "-t", "60").Run()
}

// TestPostgres runs Debian's PostgreSQL 15 unmodified under the shim on an
// XFS loop volume with full_page_writes=off and data checksums, through
// pgbench -i and a short pgbench: every aligned 8 KiB write to a relation
// file under base/ must have gone out with RWF_ATOMIC (strace -y proof and
// the shim's counters), and pg_amcheck must find nothing after a restart.
// TestPostgresVersions does the same for the newer releases.
func TestPostgres(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err != nil {
		t.Fatalf("PostgreSQL 15 is not installed (hack/deps/shim.txt lists postgresql-15): %v", err)
	}
	pgProof(t, hostDB(t, out), "15", nil)
}

var pgVersionRE = regexp.MustCompile(`\(PostgreSQL\) (\S+)`)

// pgProof runs PostgreSQL major version v on h under the shim once per
// settings list in runs (nil: one run with the defaults): each run under
// strace through pgbench -i, a short pgbench and a checkpoint, proving that
// every aligned 8 KiB write to a relation file carried RWF_ATOMIC (strace,
// the shim's counters and, from 16 on, PostgreSQL's own pg_stat_io all
// agree); then a restart in strict mode and pg_amcheck --heapallindexed.
func pgProof(t *testing.T, h dbHost, v string, runs [][]string) {
	t.Helper()
	u := h.user(t, "postgres")
	pg := pgInstance{u: u, bin: "/usr/lib/postgresql/" + v + "/bin", data: filepath.Join(h.vol, "pgdata"),
		sock: filepath.Join(h.vol, "sock"), port: 50000 + os.Getpid()%10000}
	ownedDir(t, u, h.hostPath(pg.data))
	ownedDir(t, u, h.hostPath(pg.sock))
	m := pgVersionRE.FindStringSubmatch(u.run(t, nil, filepath.Join(pg.bin, "postgres"), "--version"))
	if m == nil || !strings.HasPrefix(m[1], v+".") {
		t.Fatalf("%s/postgres is not PostgreSQL %s: %v", pg.bin, v, m)
	}
	version := m[1]
	u.run(t, nil, filepath.Join(pg.bin, "initdb"), "-k", "-D", pg.data, "-U", "postgres", "--auth=trust", "-N")
	t.Cleanup(func() {
		pg.stop(t, "immediate")
		waitForExit(pg.data)
	})
	if runs == nil {
		runs = [][]string{nil}
	}
	for i, extra := range runs {
		pg.extra = extra
		label := "base/"
		if len(extra) > 0 {
			label = strings.Join(extra, ",") + " base/"
		}
		pgTracedRun(t, h, pg, version, label, i)
	}

	// Restart under the shim in strict mode and check every relation.
	stats := filepath.Join(h.stats, "strict")
	ownedDir(t, u, h.hostPath(stats))
	srv2 := u.command([]string{"LD_PRELOAD=" + h.lib, "UNTORN_STATS_DIR=" + stats, "UNTORN_UNIT=8192", "UNTORN_MODE=strict"},
		filepath.Join(pg.bin, "pg_ctl"), "start", "-w", "-D", pg.data, "-l", filepath.Join(pg.sock, "log"),
		"-o", strings.Join(quoteAll(pg.settings()), " "))
	if b, err := srv2.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(h.hostPath(filepath.Join(pg.sock, "log")))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, b, log)
	}
	pg.waitReady(t)
	rows := pg.client(t, "psql", "-qAt", "-c", "SELECT count(*) FROM pgbench_accounts", "postgres")
	if strings.TrimSpace(rows) != "200000" {
		t.Errorf("pgbench_accounts has %q rows, want 200000", rows)
	}
	t.Log(pg.client(t, "pg_amcheck", "--install-missing", "--heapallindexed", "--all"))
	pg.client(t, "pgbench", "-c", "2", "-T", "3", "postgres")
	pg.stop(t, "fast")
	if st := readStats(t, h.hostPath(stats), "postgres"); st.StrictFailures != 0 || st.WriteErrors != 0 {
		t.Errorf("strict run: %d strict failures, %d write errors", st.StrictFailures, st.WriteErrors)
	}
}

// pgTracedRun is one run of pgProof under strace.
func pgTracedRun(t *testing.T, h dbHost, pg pgInstance, version, label string, i int) {
	t.Helper()
	stats := filepath.Join(h.stats, "run"+strconv.Itoa(i))
	trace := filepath.Join(h.scratch, "trace"+strconv.Itoa(i))
	ownedDir(t, pg.u, h.hostPath(stats))
	ownedDir(t, pg.u, h.hostPath(trace))
	// strace sees pwrite*, and io_uring_enter/io_submit (which it cannot look
	// into: the shim's counters must account for those); a seccomp filter
	// stops only the traced calls.
	sargs := append([]string{"-ff", "-qq", "-y", "--seccomp-bpf",
		"-e", "trace=pwrite64,pwritev2,pwritev,io_uring_enter,io_submit",
		"-o", filepath.Join(trace, "pg"), "-u", "postgres",
		"-E", "LD_PRELOAD=" + h.lib, "-E", "UNTORN_STATS_DIR=" + stats, "-E", "UNTORN_UNIT=8192",
		filepath.Join(pg.bin, "postgres"), "-D", pg.data}, pg.settings()...)
	srv := h.rootUser().command(nil, "strace", sargs...)
	logPath := filepath.Join(t.TempDir(), "postgres.log")
	logf, err := os.Create(logPath)
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
	if !strings.HasPrefix(version, "15.") {
		pg.client(t, "psql", "-qAt", "-c", "SELECT pg_stat_reset_shared('io')", "postgres")
	}
	// The process titles name the writers in the trace.
	titles := watchTitles(srv.Process.Pid)
	pg.client(t, "pgbench", "-i", "-s", "2", "-q", "postgres")
	pg.client(t, "pgbench", "-c", "4", "-j", "2", "-T", "5", "postgres")
	pg.client(t, "psql", "-qAt", "-c", "CHECKPOINT", "postgres")
	pgWritten := pgStatIOPages(t, pg, version)
	pg.stop(t, "fast")
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		srv.Process.Kill()
		t.Fatal("postgres under strace did not stop")
	}
	logf.Close()

	st := readStats(t, h.hostPath(stats), "postgres")
	prefix := h.hostPath(filepath.Join(trace, "pg"))
	base := traceWrites(t, prefix, regexp.MustCompile(`/pgdata/base/\d+/\d+(\.\d+)?$`), 8192)
	writers := base.writers(titles())
	wal := classifyStrace(t, prefix, regexp.MustCompile(`/pgdata/pg_wal/`), 8192)
	t.Logf("%s: relation files: %d atomic 8 KiB page writes, %d plain, %d other writes; by process: %s",
		label, base.atomic, base.plain, base.otherSizes, writers)
	t.Logf("%s: write calls to relation files: %s", label, base.shapeSummary())
	t.Logf("%s: pg_wal: %d atomic 8 KiB pieces, %d plain aligned 8 KiB pages; io_uring_enter calls %d, io_submit calls %d",
		label, wal.atomic, wal.plain, base.uringEnters, base.aioSubmits)
	t.Logf("%s: shim counters over %d postgres processes: atomic_writes=%d atomic_syscalls=%d split=%d uring=%d/%d submits aio=%d/%d passthrough=%v",
		label, st.processesMerged, st.AtomicWrites, st.AtomicSyscalls, st.SplitWrites, st.UringAtomic, st.UringSubmits,
		st.AioAtomic, st.AioSubmits, st.Passthrough)
	if pgWritten >= 0 {
		t.Logf("%s: pg_stat_io: %d relation pages written", label, pgWritten)
	}
	versionLine(t, "postgresql", version, label, base.pageWrites)
	if base.atomic == 0 || base.plain != 0 {
		t.Errorf("relation page writes: %d atomic, %d without RWF_ATOMIC; want all atomic", base.atomic, base.plain)
	}
	if st.AtomicBytes < uint64(base.atomic)*8192 || st.WriteErrors != 0 || st.StrictFailures != 0 ||
		st.Passthrough["atomic_error"] != 0 || st.Passthrough["unit_out_of_range"] != 0 {
		t.Errorf("counters: %+v", st)
	}
	// Writes the shim saw in a ring or an aio batch but could not make atomic.
	for _, r := range []string{"uring_fixed_file", "async_segments", "async_unsplittable", "async_buffered", "fd_changed"} {
		if st.Passthrough[r] != 0 {
			t.Errorf("%s: %d asynchronous writes passed through unprotected (%s)", label, st.Passthrough[r], r)
		}
	}
	// PostgreSQL's own count of relation page writes: a page it wrote that
	// neither strace nor the shim saw went out through a path the shim does
	// not cover (an io_uring submission bypassing liburing, say).
	if pgWritten > int64(base.atomic)+int64(st.UringAtomic)+int64(st.AioAtomic) {
		t.Errorf("%s: PostgreSQL wrote %d relation pages (pg_stat_io) but only %d atomic page writes were seen "+
			"(strace %d, io_uring %d, libaio %d): pages were written through a path the shim does not see",
			label, pgWritten, int64(base.atomic)+int64(st.UringAtomic)+int64(st.AioAtomic), base.atomic,
			st.UringAtomic, st.AioAtomic)
	}
	if base.uringEnters > 0 && st.UringSubmits == 0 {
		t.Logf("%s: %d io_uring_enter calls that bypass liburing's submit functions: the shim cannot look into those rings",
			label, base.uringEnters)
	}
}

// pgStatIOPages is PostgreSQL's count of relation pages written since the
// run's pg_stat_reset_shared('io') (-1 before 16, which has no pg_stat_io).
func pgStatIOPages(t *testing.T, pg pgInstance, version string) int64 {
	t.Helper()
	major, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	var q string
	switch {
	case major < 16:
		return -1
	case major < 18:
		q = "SELECT (coalesce(sum(writes * op_bytes), 0) / 8192)::bigint FROM pg_stat_io WHERE object = 'relation'"
	default:
		q = "SELECT (coalesce(sum(write_bytes), 0) / 8192)::bigint FROM pg_stat_io WHERE object = 'relation'"
	}
	n, err := strconv.ParseInt(strings.TrimSpace(pg.client(t, "psql", "-qAt", "-c", q, "postgres")), 10, 64)
	if err != nil {
		t.Fatalf("pg_stat_io: %v", err)
	}
	return n
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
