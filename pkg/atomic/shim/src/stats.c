/*
 * Counters: one JSON line per process image in $UNTORN_STATS_DIR/
 * untorn-<pid>-<token>.json, rewritten (atomically, by rename) at exit,
 * before exec, and on demand: when $UNTORN_STATS_DIR/dump-now is newer than
 * the process's last dump (checked at most once a second, on writes that the
 * shim looks at), or when the program calls untorn_stats_dump().
 */
#include "untorn.h"

#include <fcntl.h>
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
};

const char *ut_reason_name(int r) { return reason_names[r]; }

static int64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ut_stats_reset(void)
{
	memset(&ut_st, 0, sizeof ut_st);
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

static const char *tri(int v) { return v < 0 ? "null" : v ? "true" : "false"; }

static int format(char *b, size_t n, const char *why)
{
	char exe[256];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[el > 0 ? el : 0] = 0;
	for (char *p = exe; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			*p = '_';
	int k = snprintf(b, n,
		"{\"pid\":%d,\"ppid\":%d,\"exe\":\"%s\",\"why\":\"%s\",\"mode\":\"%s\","
		"\"unit\":%u,\"hardware\":%s,\"kernel_buffered_atomic\":%s,"
		"\"fs_unit_min\":%u,\"fs_unit_max\":%u,\"fs_unit_max_opt\":%u,"
		"\"atomic_writes\":%llu,\"atomic_bytes\":%llu,\"atomic_syscalls\":%llu,"
		"\"split_writes\":%llu,\"buffered_atomic\":%llu,\"direct_fd_atomic\":%llu,"
		"\"companion_opens\":%llu,\"aio_submits\":%llu,\"aio_atomic\":%llu,"
		"\"uring_submits\":%llu,\"uring_atomic\":%llu,\"direct_unsafe\":%llu,"
		"\"strict_failures\":%llu,\"write_errors\":%llu,\"passthrough\":{",
		(int)getpid(), (int)getppid(), exe, why, mode_name(), ut_cfg.unit,
		tri(ut_cfg.hardware), tri(ut_buffered_atomic), ut_fsi.unit_min, ut_fsi.unit_max,
		ut_fsi.unit_max_opt, LD(atomic_writes), LD(atomic_bytes), LD(atomic_syscalls),
		LD(split_writes), LD(buffered_atomic), LD(direct_fd_atomic), LD(companion_opens),
		LD(aio_submits), LD(aio_atomic), LD(uring_submits), LD(uring_atomic),
		LD(direct_unsafe), LD(strict_failures), LD(write_errors));
	for (int r = 0; r < UT_R_COUNT && k > 0 && (size_t)k < n; r++)
		k += snprintf(b + k, n - (size_t)k, "%s\"%s\":%llu", r ? "," : "", reason_names[r],
			      LD(pass[r]));
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
