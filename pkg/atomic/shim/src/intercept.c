/* The write entry points: pwrite*, pwritev*, write, writev. */
#include "untorn.h"

#include <errno.h>
#include <limits.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UT_EXPORT __attribute__((visibility("default")))

#undef pwrite64
#undef pwritev64
#undef pwritev64v2

/*
 * Tries to write the call untorn. Returns 1 when it handled the call (result
 * in *res, errno set on -1) and 0 when the caller must pass it through.
 * off < 0 means "at the file position" (write, writev, pwritev2 with -1).
 */
static int try_slow(int fd, const struct iovec *iov, int cnt, size_t len, off_t off, int flags,
		    ssize_t *res);
static int try_slow_entered(int fd, const struct iovec *iov, int cnt, size_t len, off_t off,
			    int flags, ssize_t *res);

/* The pass-through checks, inlined into every entry point. */
static inline __attribute__((always_inline)) int try_untorn(int fd, const struct iovec *iov,
							    int cnt, off_t off, int flags,
							    ssize_t *res)
{
	if (!ut_ready()) {
		UT_PASS(UT_R_OFF);
		return 0;
	}
	if (cnt <= 0 || cnt > IOV_MAX)
		return 0; /* the kernel reports the error */
	size_t len = 0;
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - len)
			return 0;
		len += iov[i].iov_len;
	}
	uint64_t pos = off < 0 ? 0 : (uint64_t)off;
	if (len == 0 || ((len | pos) & ut_cfg.pass_mask)) {
		UT_PASS(UT_R_UNALIGNED);
		return 0;
	}
	/* A number already known not to qualify (pipe, socket, other fs). */
	if ((unsigned)fd < UT_TABLE_SIZE &&
	    __atomic_load_n(&ut_fds[fd].state, __ATOMIC_ACQUIRE) == UT_FD_NO &&
	    ut_fds[fd].reason != UT_R_UNIT_RANGE && !(flags & ~(RWF_HIPRI | RWF_DSYNC | RWF_SYNC))) {
		UT_PASS(ut_fds[fd].reason);
		return 0;
	}
	return try_slow(fd, iov, cnt, len, off, flags, res);
}

static __attribute__((noinline)) int try_slow(int fd, const struct iovec *iov, int cnt, size_t len,
					      off_t off, int flags, ssize_t *res)
{
	if (flags & RWF_APPEND) {
		UT_PASS(UT_R_APPEND);
		return 0;
	}
	if (flags & ~(RWF_HIPRI | RWF_DSYNC | RWF_SYNC)) {
		UT_PASS(UT_R_APP_FLAGS);
		return 0;
	}
	if (ut_depth) {
		/* A signal handler's write while this thread is inside the library
		 * (classifying, opening a companion, writing): shared state may be
		 * half-way, so it goes through as it is. */
		UT_PASS(UT_R_NESTED);
		return 0;
	}
	ut_depth++;
	int h = try_slow_entered(fd, iov, cnt, len, off, flags, res);
	ut_depth--;
	return h;
}

static int try_slow_entered(int fd, const struct iovec *iov, int cnt, size_t len, off_t off,
			    int flags, ssize_t *res)
{
	int reason, at_pos = off < 0;
	struct ut_fd *e = ut_lookup(fd, &reason, 0);
	ut_stats_maybe_dump();
	if (!e) {
		if (ut_cfg.mode == UT_MODE_STRICT && reason == UT_R_UNIT_RANGE) {
			UT_INC(strict_failures);
			*res = -1;
			errno = EIO;
			return 1;
		}
		UT_PASS(reason);
		return 0;
	}
	if (off < 0) {
		off = lseek(fd, 0, SEEK_CUR);
		if (off < 0) {
			ut_release(e);
			UT_PASS(UT_R_NOT_REGULAR);
			return 0;
		}
	}
	if (!ut_unit_ok(e, len, off)) {
		ut_release(e);
		UT_PASS(UT_R_UNALIGNED);
		return 0;
	}
	int saved = errno;
	ssize_t r = ut_write_at(fd, e, iov, cnt, len, off, flags);
	ut_release(e);
	if (r < 0 && errno == ENOTSUP) {
		if (ut_cfg.mode == UT_MODE_STRICT) {
			UT_INC(strict_failures);
			errno = EIO;
			*res = -1;
			return 1;
		}
		errno = saved;
		UT_PASS(UT_R_ERROR);
		return 0;
	}
	if (at_pos && r > 0)
		lseek(fd, off + r, SEEK_SET);
	*res = r;
	return 1;
}

static int try_at_position(int fd, const struct iovec *iov, int cnt, ssize_t *res)
{
	return try_untorn(fd, iov, cnt, -1, 0, res);
}

/*
 * The pass-through fast path, taken by every write the library leaves alone:
 * decides from what the library already knows (ready, mode, the alignment
 * mask, a number already known not to qualify) that the write passes
 * through, and counts it. No system call, no lock, no locked instruction,
 * no stack frame: the entry point then tail-calls the real function.
 * Returns 0 when the write needs a closer look (try_untorn). pos is the
 * offset, 0 for a write at the file position (its real position is looked
 * at only for a descriptor that qualifies).
 */
static inline __attribute__((always_inline)) int pass_quick(int fd, size_t len, uint64_t pos,
							    int flags)
{
	/* A thread's first count allocates its block: the slow path does that. */
	struct ut_tcount *c = ut_tc;
	if (__builtin_expect(__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) != 2 || c == NULL, 0))
		return 0;
	int r;
	if (__builtin_expect(ut_cfg.mode == UT_MODE_OFF, 0))
		r = UT_R_OFF;
	else if (len == 0 || ((len | pos) & ut_cfg.pass_mask))
		r = UT_R_UNALIGNED;
	else if ((unsigned)fd < UT_TABLE_SIZE &&
		 __atomic_load_n(&ut_fds[fd].state, __ATOMIC_ACQUIRE) == UT_FD_NO &&
		 ut_fds[fd].reason != UT_R_UNIT_RANGE &&
		 !(flags & ~(RWF_HIPRI | RWF_DSYNC | RWF_SYNC)))
		r = (int)ut_fds[fd].reason;
	else
		return 0;
	__atomic_store_n(&c->pass[r], c->pass[r] + 1, __ATOMIC_RELAXED);
	return 1;
}

/* The total length of a vector the kernel would take (0 < cnt <= IOV_MAX, no
 * overflow), else -1: such calls take the slow path, which passes them on. */
static inline __attribute__((always_inline)) ssize_t iov_total(const struct iovec *iov, int cnt)
{
	if (cnt <= 0 || cnt > IOV_MAX)
		return -1;
	size_t len = 0;
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - len)
			return -1;
		len += iov[i].iov_len;
	}
	return (ssize_t)len;
}

/* The real functions when the next library has none (set by ut_resolve, so
 * that the fast path always has a function to call). */
static ssize_t sys_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return syscall(SYS_pwrite64, fd, buf, n, off);
}
static ssize_t sys_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return syscall(SYS_pwritev, fd, iov, cnt, (long)off, 0L);
}
static ssize_t sys_pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return syscall(SYS_pwritev2, fd, iov, cnt, (long)off, 0L, flags);
}
static ssize_t sys_write(int fd, const void *buf, size_t n) { return syscall(SYS_write, fd, buf, n); }
static ssize_t sys_writev(int fd, const struct iovec *iov, int cnt)
{
	return syscall(SYS_writev, fd, iov, cnt);
}

void ut_real_fallbacks(void)
{
	if (!ut_real.pwrite)
		ut_real.pwrite = sys_pwrite;
	if (!ut_real.pwritev)
		ut_real.pwritev = sys_pwritev;
	if (!ut_real.pwritev2)
		ut_real.pwritev2 = sys_pwritev2;
	if (!ut_real.write)
		ut_real.write = sys_write;
	if (!ut_real.writev)
		ut_real.writev = sys_writev;
}

/* The slow paths: the library is not ready yet, or the write may qualify. */
static __attribute__((noinline)) ssize_t pwrite_slow(int fd, const void *buf, size_t n, off_t off)
{
	struct iovec v = { (void *)buf, n };
	ssize_t r;
	if (off >= 0 && try_untorn(fd, &v, 1, off, 0, &r))
		return r;
	return ut_real.pwrite ? ut_real.pwrite(fd, buf, n, off) : sys_pwrite(fd, buf, n, off);
}

UT_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (__builtin_expect(off >= 0 && pass_quick(fd, n, (uint64_t)off, 0), 1))
		return ut_real.pwrite(fd, buf, n, off);
	return pwrite_slow(fd, buf, n, off);
}

UT_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

static __attribute__((noinline)) ssize_t pwritev_slow(int fd, const struct iovec *iov, int cnt,
						      off_t off)
{
	ssize_t r;
	if (off >= 0 && try_untorn(fd, iov, cnt, off, 0, &r))
		return r;
	return ut_real.pwritev ? ut_real.pwritev(fd, iov, cnt, off) : sys_pwritev(fd, iov, cnt, off);
}

UT_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	ssize_t len = iov_total(iov, cnt);
	if (__builtin_expect(off >= 0 && len >= 0 && pass_quick(fd, (size_t)len, (uint64_t)off, 0), 1))
		return ut_real.pwritev(fd, iov, cnt, off);
	return pwritev_slow(fd, iov, cnt, off);
}

UT_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}

/* The caller asked for an atomic write group itself (off the hot path). */
static __attribute__((noinline)) int try_group(int fd, const struct iovec *iov, int cnt, off_t off,
					       int flags, ssize_t *res)
{
	if (!ut_ready()) {
		UT_PASS(UT_R_OFF);
		return 0;
	}
	return ut_group_write(fd, iov, cnt, off, flags, res);
}

static __attribute__((noinline)) ssize_t pwritev2_slow(int fd, const struct iovec *iov, int cnt,
						       off_t off, int flags)
{
	ssize_t r;
	if (__builtin_expect(flags & RWF_ATOMIC, 0)) {
		if (try_group(fd, iov, cnt, off, flags, &r))
			return r;
	} else if (off >= 0 ? try_untorn(fd, iov, cnt, off, flags, &r)
		     : (off == -1 && flags == 0 && try_at_position(fd, iov, cnt, &r)))
		return r;
	if (ut_real.pwritev2)
		return ut_real.pwritev2(fd, iov, cnt, off, flags);
	return sys_pwritev2(fd, iov, cnt, off, flags);
}

UT_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	ssize_t len = iov_total(iov, cnt);
	if (__builtin_expect(!(flags & RWF_ATOMIC) && len >= 0 &&
			     (off >= 0 ? pass_quick(fd, (size_t)len, (uint64_t)off, flags)
				       : off == -1 && flags == 0 && pass_quick(fd, (size_t)len, 0, 0)),
			     1))
		return ut_real.pwritev2(fd, iov, cnt, off, flags);
	return pwritev2_slow(fd, iov, cnt, off, flags);
}

UT_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return pwritev2(fd, iov, cnt, off, flags);
}

static __attribute__((noinline)) ssize_t write_slow(int fd, const void *buf, size_t n)
{
	struct iovec v = { (void *)buf, n };
	ssize_t r;
	if (try_at_position(fd, &v, 1, &r))
		return r;
	return ut_real.write ? ut_real.write(fd, buf, n) : sys_write(fd, buf, n);
}

UT_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	if (__builtin_expect(pass_quick(fd, n, 0, 0), 1))
		return ut_real.write(fd, buf, n);
	return write_slow(fd, buf, n);
}

static __attribute__((noinline)) ssize_t writev_slow(int fd, const struct iovec *iov, int cnt)
{
	ssize_t r;
	if (try_at_position(fd, iov, cnt, &r))
		return r;
	return ut_real.writev ? ut_real.writev(fd, iov, cnt) : sys_writev(fd, iov, cnt);
}

UT_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	ssize_t len = iov_total(iov, cnt);
	if (__builtin_expect(len >= 0 && pass_quick(fd, (size_t)len, 0, 0), 1))
		return ut_real.writev(fd, iov, cnt);
	return writev_slow(fd, iov, cnt);
}
