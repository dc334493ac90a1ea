/* Descriptor table, classification and the synchronous writethrough. */
#include "untorn.h"
#include "abi.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(off_t) == 8, "libuntorn needs a 64-bit off_t");

struct ut_config ut_cfg = { .mode = UT_MODE_ON, .hardware = -1 };
struct ut_stats ut_st;
struct ut_fsinfo ut_fsi;
struct ut_fd ut_fds[UT_TABLE_SIZE];
struct ut_real ut_real;
int ut_buffered_atomic = -1;

int ut_inited;
__thread int ut_depth __attribute__((tls_model("initial-exec")));

/* Held only to open or drop a companion (never to classify, never on the
 * write path of a descriptor that has its companion). */
static pthread_mutex_t ut_mu = PTHREAD_MUTEX_INITIALIZER;
static int ut_hiwater; /* highest fd number ever touched + 1 */
static int ut_opening; /* companions being opened (under ut_mu) */


static void *next_sym(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

/*
 * async.c reads liburing's ring structure (struct io_uring) by a copied
 * layout, which is that of every liburing 2.x (liburing.so.2). The running
 * library must be one: liburing >= 2.4 says its version; older ones are known
 * by their soname. Anything else keeps its rings untouched (counted).
 */
static int uring_layout_known(void)
{
	if (!ut_real.uring_submit)
		return 0;
	int (*major)(void) = next_sym("io_uring_major_version");
	if (major)
		return major() == 2;
	Dl_info di;
	if (!dladdr((void *)ut_real.uring_submit, &di) || !di.dli_fname)
		return 0;
	const char *base = strrchr(di.dli_fname, '/');
	base = base ? base + 1 : di.dli_fname;
	return strncmp(base, "liburing.so.2", 13) == 0;
}

void ut_resolve(void)
{
	ut_real.pwrite = next_sym("pwrite");
	ut_real.pwritev = next_sym("pwritev");
	ut_real.pwritev2 = next_sym("pwritev2");
	ut_real.write = next_sym("write");
	ut_real.writev = next_sym("writev");
	ut_real.close = next_sym("close");
	ut_real.dup2 = next_sym("dup2");
	ut_real.dup3 = next_sym("dup3");
	ut_real.close_range = next_sym("close_range");
	ut_real.closefrom = next_sym("closefrom");
	ut_real.execve = next_sym("execve");
	ut_real.execvpe = next_sym("execvpe");
	ut_real.fexecve = next_sym("fexecve");
#ifdef __GLIBC__
	ut_real.io_submit = dlvsym(RTLD_NEXT, "io_submit", "LIBAIO_0.4");
#endif
	if (!ut_real.io_submit)
		ut_real.io_submit = next_sym("io_submit");
	ut_real.uring_submit = next_sym("io_uring_submit");
	ut_real.uring_submit_and_wait = next_sym("io_uring_submit_and_wait");
	ut_real.uring_submit_and_wait_timeout = next_sym("io_uring_submit_and_wait_timeout");
	ut_real.uring_submit_and_get_events = next_sym("io_uring_submit_and_get_events");
	ut_real.open = next_sym("open");
	ut_real.open64 = next_sym("open64");
	ut_real.openat = next_sym("openat");
	ut_real.openat64 = next_sym("openat64");
	ut_real.open_2 = next_sym("__open_2");
	ut_real.open64_2 = next_sym("__open64_2");
	ut_real.openat_2 = next_sym("__openat_2");
	ut_real.openat64_2 = next_sym("__openat64_2");
	ut_real.creat = next_sym("creat");
	ut_real.creat64 = next_sym("creat64");
	ut_real.dup = next_sym("dup");
	ut_real.fcntl = next_sym("fcntl");
	ut_real.fcntl64 = next_sym("fcntl64");
	ut_real.uring_layout_ok = uring_layout_known();
	ut_real_fallbacks();
}

static void warn(const char *msg)
{
	char b[600];
	int n = snprintf(b, sizeof b, "libuntorn[%d]: %s\n", (int)getpid(), msg);
	if (n > 0)
		syscall(SYS_write, 2, b, (size_t)(n < (int)sizeof b ? n : (int)sizeof b - 1));
}

static void copy_env(char *dst, size_t n, const char *name)
{
	const char *v = getenv(name);
	dst[0] = 0;
	if (v && strlen(v) < n)
		strcpy(dst, v);
	else if (v)
		warn("environment value too long, ignored");
}

static void atfork_prepare(void) { pthread_mutex_lock(&ut_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&ut_mu); }
static void atfork_child(void)
{
	pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
	ut_mu = fresh;
	ut_after_fork_child();
}

/* This thread is inside ut_init: a call that dlsym or getenv makes back into
 * the library (another preload library's malloc that opens a file, say)
 * passes through instead of waiting for itself. */
static __thread int ut_initialising __attribute__((tls_model("initial-exec")));

static void configure(void);

void ut_init(void)
{
	if (__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) == 2 || ut_initialising)
		return;
	int zero = 0;
	if (!__atomic_compare_exchange_n(&ut_inited, &zero, 1, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		/* Another thread initialises; it holds no lock this thread could
		 * need, so waiting for it cannot deadlock. */
		while (__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
		return;
	}
	ut_initialising = 1;
	ut_resolve();
	configure();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	ut_stats_reset();
	__atomic_store_n(&ut_inited, 2, __ATOMIC_RELEASE);
	ut_initialising = 0;
}

static void configure(void)
{
	const char *m = getenv("UNTORN_MODE");
	if (!m || !*m || !strcmp(m, "on"))
		ut_cfg.mode = UT_MODE_ON;
	else if (!strcmp(m, "off"))
		ut_cfg.mode = UT_MODE_OFF;
	else if (!strcmp(m, "strict"))
		ut_cfg.mode = UT_MODE_STRICT;
	else if (!strcmp(m, "unsafe-direct-bench")) {
		const char *ok = getenv("UNTORN_BENCH_CONFIRM");
		if (ok && !strcmp(ok, "I-accept-torn-pages")) {
			ut_cfg.mode = UT_MODE_DIRECT_BENCH;
		} else {
			warn("UNTORN_MODE=unsafe-direct-bench refused (writes WITHOUT torn-page protection; "
			     "benchmarks only, needs UNTORN_BENCH_CONFIRM=I-accept-torn-pages); using mode on");
			ut_cfg.mode = UT_MODE_ON;
		}
	} else {
		warn("UNTORN_MODE must be on, off or strict; using on");
		ut_cfg.mode = UT_MODE_ON;
	}
	if (ut_cfg.mode == UT_MODE_DIRECT_BENCH)
		warn("UNSAFE: unsafe-direct-bench mode, page writes are NOT protected against tearing");
	const char *u = getenv("UNTORN_UNIT");
	if (u && *u) {
		char *end;
		unsigned long v = strtoul(u, &end, 10);
		if (*end == 'k' || *end == 'K')
			v *= 1024, end++;
		if (*end || v < 512 || v > (1UL << 30) || (v & (v - 1)))
			warn("UNTORN_UNIT must be a power of two >= 512 (bytes, or with a K suffix); "
			     "using the filesystem's unit min");
		else
			ut_cfg.unit = (uint32_t)v;
	}
	/* Below the smallest unit any filesystem offers (512) no write qualifies. */
	ut_cfg.pass_mask = ut_cfg.unit ? ut_cfg.unit - 1 : 511;
	const char *hw = getenv("UNTORN_HARDWARE");
	ut_cfg.hardware = (hw && !strcmp(hw, "1")) ? 1 : (hw && !strcmp(hw, "0")) ? 0 : -1;
	copy_env(ut_cfg.stats_dir, sizeof ut_cfg.stats_dir, "UNTORN_STATS_DIR");
	copy_env(ut_cfg.include, sizeof ut_cfg.include, "UNTORN_INCLUDE");
	/* PostgreSQL's WAL needs no torn-page protection (records carry CRCs)
	 * and is much faster on the buffered path: excluded unless the operator
	 * sets UNTORN_EXCLUDE (an empty value excludes nothing). */
	if (getenv("UNTORN_EXCLUDE"))
		copy_env(ut_cfg.exclude, sizeof ut_cfg.exclude, "UNTORN_EXCLUDE");
	else
		strcpy(ut_cfg.exclude, "*/pg_wal/*");
}

__attribute__((constructor)) static void ut_ctor(void) { ut_init(); }
__attribute__((destructor)) static void ut_dtor(void) { ut_stats_dump("exit"); }

/* Glob lists are separated by ':' or ','; '*' also matches '/'. */
static int glob_match(const char *list, const char *path)
{
	char pat[256];
	const char *p = list;
	while (*p) {
		size_t n = strcspn(p, ":,");
		if (n > 0 && n < sizeof pat) {
			memcpy(pat, p, n);
			pat[n] = 0;
			if (fnmatch(pat, path, 0) == 0)
				return 1;
		}
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

static int ut_statx(int fd, struct ut_statx *sx)
{
	memset(sx, 0, sizeof *sx);
	return (int)syscall(SYS_statx, fd, "", AT_EMPTY_PATH,
			    UT_STATX_WRITE_ATOMIC | 0x2000U /* STATX_DIOALIGN */, sx);
}

/* Decides whether fd qualifies (the caller owns e: its state is UT_FD_BUSY).
 * Uses system calls only: no lock, no allocation. Returns the state. */
static uint32_t classify(int fd, struct ut_fd *e)
{
	struct stat st;
	struct ut_statx sx;
	if (fstat(fd, &st) != 0)
		return UT_FD_UNKNOWN; /* not open: never cached */
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->group_ok = 0;
	e->reason = UT_R_NOT_REGULAR;
	if (!S_ISREG(st.st_mode))
		return UT_FD_NO;
	int fl = (int)syscall(SYS_fcntl, fd, F_GETFL);
	e->reason = UT_R_APPEND;
	if (fl < 0 || (fl & O_APPEND))
		return UT_FD_NO;
	e->reason = UT_R_NOT_WRITABLE;
	if ((fl & O_ACCMODE) == O_RDONLY)
		return UT_FD_NO;
	e->direct = (fl & O_DIRECT) != 0;
	e->unit_min = e->unit_max = e->max_opt = 0;
	if (ut_statx(fd, &sx) == 0 && (sx.mask & UT_STATX_WRITE_ATOMIC) &&
	    (sx.attributes & UT_STATX_ATTR_WRITE_ATOMIC) && sx.awu_min != 0 &&
	    sx.awu_max >= sx.awu_min) {
		e->unit_min = sx.awu_min;
		e->unit_max = sx.awu_max;
		e->max_opt = sx.awu_max_opt;
		e->mem_align = (sx.mask & 0x2000U) && sx.dio_mem_align ? sx.dio_mem_align : 4096;
		/* An application that asks for atomic write groups gets them on any
		 * writable file of an atomic filesystem: the unit and the path
		 * filter are about page writes of unaware writers. */
		e->group_ok = 1;
	}
	/* The path filter comes before the filesystem's limits: an excluded
	 * file (PostgreSQL's WAL on a volume of its own, say) is left alone
	 * whatever its filesystem offers, and strict mode never fails it. */
	if (ut_cfg.include[0] || ut_cfg.exclude[0]) {
		char link[64], path[4096];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, path, sizeof path - 1);
		path[n > 0 ? n : 0] = 0;
		e->reason = UT_R_EXCLUDED;
		if (ut_cfg.include[0] && !glob_match(ut_cfg.include, path))
			return UT_FD_NO;
		if (ut_cfg.exclude[0] && glob_match(ut_cfg.exclude, path))
			return UT_FD_NO;
	}
	e->reason = UT_R_NOT_ATOMIC;
	if (!e->group_ok)
		return UT_FD_NO;
	uint32_t unit = ut_cfg.unit ? ut_cfg.unit : e->unit_min;
	e->unit = unit;
	ut_fsi.unit_min = e->unit_min;
	ut_fsi.unit_max = e->unit_max;
	ut_fsi.unit_max_opt = e->max_opt;
	ut_fsi.segments_max = sx.awu_segments_max;
	e->reason = UT_R_UNIT_RANGE;
	if (unit < e->unit_min || unit > e->unit_max || (unit & (unit - 1)))
		return UT_FD_NO;
	return UT_FD_YES;
}

static void note_fd(int fd)
{
	int cur = __atomic_load_n(&ut_hiwater, __ATOMIC_RELAXED);
	while (fd + 1 > cur &&
	       !__atomic_compare_exchange_n(&ut_hiwater, &cur, fd + 1, 0, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

static void drop_user(struct ut_fd *e)
{
	__atomic_fetch_sub(&e->users, 1, __ATOMIC_RELEASE);
}

void ut_release(struct ut_fd *e) { drop_user(e); }

/*
 * Classifies an unknown number without a lock: the thread that moves the
 * state from UNKNOWN to BUSY classifies, publishes the result unless the
 * number was closed meanwhile (ut_forget moved it back to UNKNOWN), and
 * everyone else waits for it (the classifier holds nothing they could need).
 * Returns the state, UT_FD_UNKNOWN when the number changed under us.
 */
static uint32_t classify_once(int fd, struct ut_fd *e)
{
	uint32_t s = UT_FD_UNKNOWN;
	if (__atomic_compare_exchange_n(&e->state, &s, UT_FD_BUSY, 0, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE)) {
		note_fd(fd);
		uint32_t r = classify(fd, e);
		uint32_t busy = UT_FD_BUSY;
		if (r == UT_FD_UNKNOWN ||
		    !__atomic_compare_exchange_n(&e->state, &busy, r, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE)) {
			/* Not open, or closed while we looked: nothing is cached. */
			busy = UT_FD_BUSY;
			__atomic_compare_exchange_n(&e->state, &busy, UT_FD_UNKNOWN, 0,
						    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
			return UT_FD_UNKNOWN;
		}
		return r;
	}
	for (int spins = 0; s == UT_FD_BUSY && spins < 100000; spins++) {
		sched_yield();
		s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	}
	return s == UT_FD_BUSY ? UT_FD_UNKNOWN : s;
}

/* Returns the entry with a user reference held, or NULL and the reason. */
struct ut_fd *ut_lookup(int fd, int *reason, int group)
{
	if (fd < 0 || fd >= UT_TABLE_SIZE) {
		*reason = UT_R_FD_RANGE;
		return NULL;
	}
	struct ut_fd *e = &ut_fds[fd];
	for (int tries = 0; tries < 4; tries++) {
		uint32_t s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
		if (s == UT_FD_UNKNOWN || s == UT_FD_BUSY) {
			s = classify_once(fd, e);
			if (s == UT_FD_UNKNOWN) {
				*reason = UT_R_UNKNOWN_FD;
				return NULL;
			}
		}
		if (s == UT_FD_NO && !(group && e->group_ok)) {
			*reason = (int)e->reason;
			return NULL;
		}
		__atomic_fetch_add(&e->users, 1, __ATOMIC_ACQ_REL);
		if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != s) {
			drop_user(e);
			continue;
		}
		/* The number may have been reused behind our back (a close we did
		 * not see): the companion must belong to the same file. */
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_dev == e->dev && st.st_ino == e->ino)
			return e;
		drop_user(e);
		ut_forget(fd);
	}
	*reason = UT_R_UNKNOWN_FD;
	return NULL;
}

int ut_unit_ok(const struct ut_fd *e, size_t len, off_t off)
{
	uint64_t m = e->unit - 1;
	return len > 0 && ((len | (uint64_t)off) & m) == 0;
}

/* Closes fd's companion (if any) and marks the number unknown. */
void ut_forget(int fd)
{
	if (fd < 0 || fd >= UT_TABLE_SIZE)
		return;
	struct ut_fd *e = &ut_fds[fd];
	int owner = __atomic_load_n(&e->owner, __ATOMIC_ACQUIRE);
	uint32_t s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	/* A companion being opened may be this number before its owner is
	 * recorded: then take the lock, which the opener holds until it is. */
	if (owner == 0 && s != UT_FD_YES && __atomic_load_n(&e->companion1, __ATOMIC_ACQUIRE) == 0 &&
	    __atomic_load_n(&e->users, __ATOMIC_ACQUIRE) == 0 &&
	    __atomic_load_n(&ut_opening, __ATOMIC_SEQ_CST) == 0) {
		if (s != UT_FD_UNKNOWN)
			__atomic_store_n(&e->state, UT_FD_UNKNOWN, __ATOMIC_RELEASE);
		return;
	}
	/* A signal handler's write while the lock is held passes through. */
	ut_depth++;
	pthread_mutex_lock(&ut_mu);
	if (e->owner > 0) {
		/* The caller closes a number we use as a companion. */
		struct ut_fd *o = &ut_fds[e->owner - 1];
		/* Unpublish first, then wait for the writers that may have
		 * picked the number up before, then let it be closed. */
		int mine = fd + 1;
		__atomic_compare_exchange_n(&o->companion1, &mine, 0, 0, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE);
		while (__atomic_load_n(&o->users, __ATOMIC_ACQUIRE) != 0)
			sched_yield();
		e->owner = 0;
	}
	__atomic_store_n(&e->state, UT_FD_UNKNOWN, __ATOMIC_RELEASE);
	while (__atomic_load_n(&e->users, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
	if (e->companion1 > 0) {
		int c = e->companion1 - 1;
		e->companion1 = 0;
		if (c < UT_TABLE_SIZE)
			ut_fds[c].owner = 0;
		syscall(SYS_close, c);
	}
	pthread_mutex_unlock(&ut_mu);
	ut_depth--;
}

void ut_forget_range(unsigned first, unsigned last)
{
	int hi = __atomic_load_n(&ut_hiwater, __ATOMIC_RELAXED);
	if (last >= (unsigned)hi)
		last = hi > 0 ? (unsigned)hi - 1 : 0;
	for (unsigned fd = first; fd <= last && fd < UT_TABLE_SIZE; fd++)
		ut_forget((int)fd);
}

void ut_after_fork_child(void)
{
	int hi = ut_hiwater;
	for (int i = 0; i < hi; i++) {
		ut_fds[i].users = 0;
		/* A classification another thread had under way died with it. */
		if (ut_fds[i].state == UT_FD_BUSY)
			ut_fds[i].state = UT_FD_UNKNOWN;
	}
	ut_stats_reset();
}

/* Opens the O_DIRECT companion of fd; called without a user reference. */
static int open_companion(int fd, struct ut_fd *e)
{
	int ok = 0;
	pthread_mutex_lock(&ut_mu);
	uint32_t s = e->state;
	int usable = s == UT_FD_YES || (s == UT_FD_NO && e->group_ok);
	if (usable && e->companion1 > 0) {
		ok = 1;
	} else if (usable) {
		char link[64];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		__atomic_fetch_add(&ut_opening, 1, __ATOMIC_SEQ_CST);
		int c = (int)syscall(SYS_openat, AT_FDCWD, link, O_WRONLY | O_DIRECT | O_CLOEXEC);
		struct stat st;
		if (c >= 0 && (fstat(c, &st) != 0 || st.st_dev != e->dev || st.st_ino != e->ino)) {
			syscall(SYS_close, c);
			c = -1;
		}
		if (c >= 0) {
			note_fd(c);
			if (c < UT_TABLE_SIZE) {
				ut_fds[c].state = UT_FD_UNKNOWN;
				ut_fds[c].owner = fd + 1;
			}
			__atomic_store_n(&e->companion1, c + 1, __ATOMIC_RELEASE);
			UT_INC(companion_opens);
			ok = 1;
		}
		__atomic_fetch_sub(&ut_opening, 1, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&ut_mu);
	return ok;
}

/*
 * Returns fd's companion descriptor, opening it on first use, with the
 * caller's user reference on e still held (it is dropped while the companion
 * is opened, so that a concurrent close can proceed). -1: none could be had.
 */
int ut_companion(int fd, struct ut_fd *e)
{
	int c = __atomic_load_n(&e->companion1, __ATOMIC_ACQUIRE) - 1;
	if (c >= 0)
		return c;
	drop_user(e);
	int ok = open_companion(fd, e);
	__atomic_fetch_add(&e->users, 1, __ATOMIC_ACQ_REL);
	c = __atomic_load_n(&e->companion1, __ATOMIC_ACQUIRE) - 1;
	uint32_t s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	if (!ok || c < 0 || !(s == UT_FD_YES || (s == UT_FD_NO && e->group_ok)))
		return -1;
	return c;
}
