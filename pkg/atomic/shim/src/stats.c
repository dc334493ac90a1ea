/*
 * Counters: one JSON line per process image in $UNTORN_STATS_DIR/
 * untorn-<pid>-<token>.json, rewritten (atomically, by rename) at exit,
 * before exec, and on demand: when $UNTORN_STATS_DIR/dump-now is newer than
 * the process's last dump (checked at most once a second, on writes that the
 * shim looks at), or when the program calls untorn_stats_dump().
 */
#include "untorn.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t ut_token;      /* distinguishes processes that reuse a pid */
static int64_t ut_next_check;  /* CLOCK_MONOTONIC_COARSE seconds */
static int64_t ut_last_dump;   /* CLOCK_REALTIME ns of the last dump */

static const char *const reason_names[UT_R_COUNT] = {
	[UT_R_OFF] = "mode_off",
	[UT_R_UNALIGNED] = "unaligned",
	[UT_R_NOT_REGULAR] = "not_regular",
	[UT_R_NOT_ATOMIC] = "fs_not_atomic",
	[UT_R_UNIT_RANGE] = "unit_out_of_range",
	[UT_R_APPEND] = "append",
	[UT_R_EXCLUDED] = "excluded",
	[UT_R_NOT_WRITABLE] = "read_only",
	[UT_R_FD_RANGE] = "fd_out_of_range",
	[UT_R_APP_FLAGS] = "caller_flags",
	[UT_R_ERROR] = "atomic_error",
	[UT_R_SEGMENTS] = "async_segments",
	[UT_R_UNSPLITTABLE] = "async_unsplittable",
	[UT_R_BUFFERED_ASYNC] = "async_buffered",
	[UT_R_FIXED_FILE] = "uring_fixed_file",
	[UT_R_UNKNOWN_FD] = "fd_changed",
	[UT_R_NESTED] = "nested",
	[UT_R_URING_LAYOUT] = "uring_layout",
};

static const char *const refusal_names[UT_G_COUNT] = {
	[UT_G_NOT_ATOMIC] = "not_atomic",
	[UT_G_LENGTH] = "length",
	[UT_G_ALIGNMENT] = "alignment",
	[UT_G_SEGMENTS] = "segments",
	[UT_G_FLAGS] = "flags",
	[UT_G_ERROR] = "error",
};

const char *ut_reason_name(int r) { return reason_names[r]; }

static int64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define UT_TC_POOL 1024
static struct ut_tcount ut_tc_pool[UT_TC_POOL];
static struct ut_tcount *ut_tc_list;
static uint32_t ut_tc_used;
__thread struct ut_tcount *ut_tc __attribute__((tls_model("initial-exec")));
static pthread_key_t ut_tc_key;
static pthread_once_t ut_tc_once = PTHREAD_ONCE_INIT;

/* A thread's block is kept (with its counts) for the next new thread. */
static void tc_release(void *p) { __atomic_store_n(&((struct ut_tcount *)p)->in_use, 0, __ATOMIC_RELEASE); }
static void tc_key(void) { pthread_key_create(&ut_tc_key, tc_release); }

struct ut_tcount *ut_tc_new(void)
{
	pthread_once(&ut_tc_once, tc_key);
	struct ut_tcount *c;
	for (c = __atomic_load_n(&ut_tc_list, __ATOMIC_ACQUIRE); c; c = c->next) {
		uint32_t free = 0;
		if (__atomic_compare_exchange_n(&c->in_use, &free, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			break;
	}
	if (!c) {
		uint32_t i = __atomic_fetch_add(&ut_tc_used, 1, __ATOMIC_RELAXED);
		if (i >= UT_TC_POOL)
			return NULL;
		c = &ut_tc_pool[i];
		c->in_use = 1;
		c->next = __atomic_load_n(&ut_tc_list, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&ut_tc_list, &c->next, c, 0, __ATOMIC_RELEASE,
						    __ATOMIC_RELAXED))
			;
	}
	ut_tc = c;
	pthread_setspecific(ut_tc_key, c);
	return c;
}

static uint64_t pass_total(int r)
{
	uint64_t n = __atomic_load_n(&ut_st.pass[r], __ATOMIC_RELAXED);
	for (struct ut_tcount *c = __atomic_load_n(&ut_tc_list, __ATOMIC_ACQUIRE); c; c = c->next)
		n += __atomic_load_n(&c->pass[r], __ATOMIC_RELAXED);
	return n;
}

void ut_stats_reset(void)
{
	memset(&ut_st, 0, sizeof ut_st);
	/* After fork only the calling thread is left: its block stays its own. */
	for (struct ut_tcount *c = ut_tc_list; c; c = c->next) {
		memset(c->pass, 0, sizeof c->pass);
		c->in_use = c == ut_tc;
	}
	ut_token = (uint64_t)now_ns(CLOCK_REALTIME);
	ut_last_dump = 0;
	ut_next_check = 0;
}

#define LD(f) ((unsigned long long)__atomic_load_n(&ut_st.f, __ATOMIC_RELAXED))

static const char *mode_name(void)
{
	switch (ut_cfg.mode) {
	case UT_MODE_OFF: return "off";
	case UT_MODE_STRICT: return "strict";
	case UT_MODE_DIRECT_BENCH: return "unsafe-direct-bench";
	default: return "on";
	}
}

static const char *tri(int v) { return v == 1 ? "true" : v == 0 ? "false" : "null"; }

/* Replaces what JSON would need escaped. */
static void json_safe(char *p)
{
	for (; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			*p = '_';
}

/* The process title as ps shows it (PostgreSQL writes its role there:
 * "postgres: checkpointer", "postgres: postgres db [local] idle"). */
static void title(char *t, size_t n)
{
	int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t l = fd >= 0 ? syscall(SYS_read, fd, t, n - 1) : -1;
	if (fd >= 0)
		syscall(SYS_close, fd);
	if (l < 0)
		l = 0;
	while (l > 0 && t[l - 1] == 0)
		l--;
	t[l] = 0;
	for (ssize_t i = 0; i < l; i++)
		if (t[i] == 0)
			t[i] = ' ';
	json_safe(t);
}

static int format(char *b, size_t n, const char *why)
{
	char exe[256], cmd[128];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[el > 0 ? el : 0] = 0;
	json_safe(exe);
	title(cmd, sizeof cmd);
	int k = snprintf(b, n,
		"{\"pid\":%d,\"ppid\":%d,\"exe\":\"%s\",\"title\":\"%s\",\"why\":\"%s\",\"mode\":\"%s\","
		"\"unit\":%u,\"hardware\":%s,\"kernel_buffered_atomic\":%s,"
		"\"fs_unit_min\":%u,\"fs_unit_max\":%u,\"fs_unit_max_opt\":%u,"
		"\"atomic_writes\":%llu,\"atomic_bytes\":%llu,\"atomic_syscalls\":%llu,"
		"\"split_writes\":%llu,\"buffered_atomic\":%llu,\"direct_fd_atomic\":%llu,"
		"\"companion_opens\":%llu,\"aio_submits\":%llu,\"aio_atomic\":%llu,"
		"\"uring_submits\":%llu,\"uring_atomic\":%llu,\"direct_unsafe\":%llu,"
		"\"strict_failures\":%llu,\"write_errors\":%llu,\"writethrough_ns\":%llu,"
		"\"group_asked\":%llu,\"group_done\":%llu,\"group_kernel\":%llu,\"group_refused\":{",
		(int)getpid(), (int)getppid(), exe, cmd, why, mode_name(), ut_cfg.unit,
		tri(ut_cfg.hardware), tri(ut_buffered_atomic), ut_fsi.unit_min, ut_fsi.unit_max,
		ut_fsi.unit_max_opt, LD(atomic_writes), LD(atomic_bytes), LD(atomic_syscalls),
		LD(split_writes), LD(buffered_atomic), LD(direct_fd_atomic), LD(companion_opens),
		LD(aio_submits), LD(aio_atomic), LD(uring_submits), LD(uring_atomic),
		LD(direct_unsafe), LD(strict_failures), LD(write_errors), LD(writethrough_ns), LD(group_asked),
		LD(group_done), LD(group_kernel));
	for (int g = 0; g < UT_G_COUNT && k > 0 && (size_t)k < n; g++)
		k += snprintf(b + k, n - (size_t)k, "%s\"%s\":%llu", g ? "," : "", refusal_names[g],
			      LD(group_refused[g]));
	if (k > 0 && (size_t)k < n)
		k += snprintf(b + k, n - (size_t)k, "},\"passthrough\":{");
	for (int r = 0; r < UT_R_COUNT && k > 0 && (size_t)k < n; r++)
		k += snprintf(b + k, n - (size_t)k, "%s\"%s\":%llu", r ? "," : "", reason_names[r],
			      (unsigned long long)pass_total(r));
	if (k > 0 && (size_t)k < n)
		k += snprintf(b + k, n - (size_t)k, "}}\n");
	return k > 0 && (size_t)k < n ? k : -1;
}

void ut_stats_dump(const char *why)
{
	if (!ut_cfg.stats_dir[0])
		return;
	char line[3072], tmp[700], dst[700];
	int n = format(line, sizeof line, why);
	if (n < 0)
		return;
	snprintf(tmp, sizeof tmp, "%s/.untorn-%d-%llu.tmp", ut_cfg.stats_dir, (int)getpid(),
		 (unsigned long long)ut_token);
	snprintf(dst, sizeof dst, "%s/untorn-%d-%llu.json", ut_cfg.stats_dir, (int)getpid(),
		 (unsigned long long)ut_token);
	int fd = (int)syscall(SYS_openat, AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0644);
	if (fd < 0)
		return;
	ssize_t w = syscall(SYS_write, fd, line, (size_t)n);
	syscall(SYS_close, fd);
	if (w == n)
		rename(tmp, dst);
	else
		unlink(tmp);
	ut_last_dump = now_ns(CLOCK_REALTIME);
}

void ut_stats_maybe_dump(void)
{
	if (!ut_cfg.stats_dir[0])
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	int64_t next = __atomic_load_n(&ut_next_check, __ATOMIC_RELAXED);
	if (ts.tv_sec < next ||
	    !__atomic_compare_exchange_n(&ut_next_check, &next, (int64_t)ts.tv_sec + 1, 0,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	char p[600];
	struct stat st;
	snprintf(p, sizeof p, "%s/dump-now", ut_cfg.stats_dir);
	if (stat(p, &st) != 0)
		return;
	int64_t m = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if (m > ut_last_dump)
		ut_stats_dump("demand");
}

/* For programs that want their counters now (dlsym it, or link with it). */
__attribute__((visibility("default"))) void untorn_stats_dump(void) { ut_stats_dump("demand"); }
