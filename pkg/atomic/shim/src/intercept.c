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
	uint64_t m = ut_cfg.unit ? ut_cfg.unit - 1 : 511;
	if (len == 0 || ((len | pos) & m)) {
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

UT_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	struct iovec v = { (void *)buf, n };
	ssize_t r;
	if (off >= 0 && try_untorn(fd, &v, 1, off, 0, &r))
		return r;
	return ut_real.pwrite ? ut_real.pwrite(fd, buf, n, off)
			      : syscall(SYS_pwrite64, fd, buf, n, off);
}

UT_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

UT_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	ssize_t r;
	if (off >= 0 && try_untorn(fd, iov, cnt, off, 0, &r))
		return r;
	return ut_real.pwritev ? ut_real.pwritev(fd, iov, cnt, off)
			       : syscall(SYS_pwritev, fd, iov, cnt, (long)off, 0L);
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

UT_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
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
	return syscall(SYS_pwritev2, fd, iov, cnt, (long)off, 0L, flags);
}

UT_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return pwritev2(fd, iov, cnt, off, flags);
}

UT_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct iovec v = { (void *)buf, n };
	ssize_t r;
	if (try_at_position(fd, &v, 1, &r))
		return r;
	return ut_real.write ? ut_real.write(fd, buf, n) : syscall(SYS_write, fd, buf, n);
}

UT_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	ssize_t r;
	if (try_at_position(fd, iov, cnt, &r))
		return r;
	return ut_real.writev ? ut_real.writev(fd, iov, cnt) : syscall(SYS_writev, fd, iov, cnt);
}
