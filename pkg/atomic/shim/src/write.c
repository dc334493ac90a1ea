/*
 * The synchronous writethrough: unaware writers' page writes (ut_write_at)
 * and the buffered atomic write groups applications ask for with
 * pwritev2(RWF_ATOMIC) (ut_group_write).
 */
#include "untorn.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Per-thread aligned bounce buffer (never used by a nested call: a signal
 * handler's write passes through, see ut_depth). */
static __thread char *ut_bounce;
static __thread size_t ut_bounce_len;
static pthread_key_t ut_bounce_key;
static pthread_once_t ut_bounce_once = PTHREAD_ONCE_INIT;

static void bounce_free(void *p)
{
	if (p)
		munmap(p, ut_bounce_len);
}
static void bounce_key(void) { pthread_key_create(&ut_bounce_key, bounce_free); }

static char *bounce(size_t len)
{
	if (ut_bounce_len >= len)
		return ut_bounce;
	pthread_once(&ut_bounce_once, bounce_key);
	if (ut_bounce)
		munmap(ut_bounce, ut_bounce_len);
	size_t n = (len + 4095) & ~(size_t)4095;
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		ut_bounce = NULL;
		ut_bounce_len = 0;
		return NULL;
	}
	ut_bounce = p;
	ut_bounce_len = n;
	pthread_setspecific(ut_bounce_key, p);
	return p;
}

/* Copies len bytes starting at byte skip of the iovec array into dst. */
static void gather(char *dst, const struct iovec *iov, int cnt, size_t skip, size_t len)
{
	for (int i = 0; i < cnt && len > 0; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t n = l - skip < len ? l - skip : len;
		memcpy(dst, (const char *)iov[i].iov_base + skip, n);
		dst += n;
		len -= n;
		skip = 0;
	}
}

/*
 * One pwritev2 of len bytes taken from byte skip of iov: the caller's buffer
 * itself when it is one segment aligned to align, else a gathered copy.
 * Returns the system call's result (errno on -1); ENOMEM: no bounce buffer.
 */
ssize_t ut_write_piece(int target, const struct iovec *iov, int cnt, size_t skip, size_t len,
		       off_t off, int flags, size_t align)
{
	struct iovec one;
	size_t first = 0;
	int i = 0;
	while (i < cnt && skip >= first + iov[i].iov_len)
		first += iov[i++].iov_len;
	if (i < cnt && skip - first + len <= iov[i].iov_len &&
	    ((uintptr_t)iov[i].iov_base + (skip - first)) % align == 0) {
		one.iov_base = (char *)iov[i].iov_base + (skip - first);
	} else {
		char *b = bounce(len);
		if (!b) {
			errno = ENOMEM;
			return -1;
		}
		gather(b, iov, cnt, skip, len);
		one.iov_base = b;
	}
	one.iov_len = len;
	ssize_t r;
	do
		r = syscall(SYS_pwritev2, target, &one, 1, (long)off, 0L, flags);
	while (r < 0 && errno == EINTR);
	return r;
}

/* The largest atomic piece at off: a power of two from unit up to cap, no
 * longer than rem and aligned at off. */
static size_t piece_len(uint64_t off, size_t rem, size_t unit, size_t cap)
{
	size_t p = unit;
	while (p * 2 <= rem && p * 2 <= cap && (off & (p * 2 - 1)) == 0)
		p *= 2;
	return p;
}

/*
 * Writes len bytes (a multiple of e->unit at an aligned offset) untorn: the
 * whole call as one atomic write where the filesystem takes it (a power of
 * two, aligned, up to its fast limit stx_atomic_write_unit_max_opt where it
 * reports one, else its unit max), else the largest aligned pieces it takes.
 * Returns the byte count, or -1 with errno; errno ENOTSUP means "nothing
 * written, pass the call through".
 */
ssize_t ut_write_at(int fd, struct ut_fd *e, const struct iovec *iov, int cnt, size_t len,
		    off_t off, int flags)
{
	size_t unit = e->unit, done = 0, pieces = 0;
	size_t cap = e->max_opt >= unit ? e->max_opt : e->unit_max;
	if (cap < unit)
		cap = unit;
	int atomic = ut_cfg.mode == UT_MODE_DIRECT_BENCH ? 0 : RWF_ATOMIC;
	int target = -1, buffered = 0, probing = 0;

	if (e->direct) {
		target = fd;
	} else if (atomic) {
		/* -1 unknown, 2 one thread is probing, 1 kernel takes it, 0 not */
		int b = __atomic_load_n(&ut_buffered_atomic, __ATOMIC_ACQUIRE), unknown = -1;
		if (b == 1 || (b == -1 && __atomic_compare_exchange_n(&ut_buffered_atomic, &unknown, 2, 0,
								       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))) {
			target = fd;
			buffered = 1;
			probing = b == -1;
		}
	}
	while (done < len) {
		if (target < 0) {
			target = ut_companion(fd, e);
			if (target < 0) {
				errno = ENOTSUP;
				return done ? (ssize_t)done : -1;
			}
		}
		size_t n = piece_len((uint64_t)off + done, len - done, unit, cap);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ssize_t r = ut_write_piece(target, iov, cnt, done, n, off + (off_t)done,
					   flags | atomic, buffered ? 1 : e->mem_align);
		int werr = errno;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		UT_ADD(writethrough_ns, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
						   (t1.tv_nsec - t0.tv_nsec)));
		errno = werr;
		if (r < 0 && errno == ENOMEM) {
			errno = ENOTSUP;
			return done ? (ssize_t)done : -1;
		}
		if (r < 0 && buffered && (errno == EOPNOTSUPP || errno == EINVAL)) {
			/* The kernel has no buffered RWF_ATOMIC: writethrough from now on. */
			__atomic_store_n(&ut_buffered_atomic, 0, __ATOMIC_RELEASE);
			buffered = probing = 0;
			target = -1;
			continue;
		}
		if (probing) {
			__atomic_store_n(&ut_buffered_atomic, r < 0 ? -1 : 1, __ATOMIC_RELEASE);
			probing = 0;
		}
		if (r < 0) {
			int err = errno;
			UT_INC(write_errors);
			if (done)
				return (ssize_t)done;
			errno = (err == EINVAL || err == EOPNOTSUPP) ? ENOTSUP : err;
			return -1;
		}
		pieces++;
		if (atomic) {
			UT_INC(atomic_syscalls);
			if (buffered)
				UT_INC(buffered_atomic);
			else if (e->direct)
				UT_INC(direct_fd_atomic);
		}
		done += (size_t)r;
		if ((size_t)r < n)
			break;
	}
	if (pieces > 1)
		UT_INC(split_writes);
	if (atomic) {
		UT_INC(atomic_writes);
		UT_ADD(atomic_bytes, done);
	} else {
		UT_INC(direct_unsafe);
	}
	return (ssize_t)done;
}

static int refuse(int why, int err, ssize_t *res)
{
	UT_INC(group_refused[why]);
	errno = err;
	*res = -1;
	return 1;
}

static int to_kernel(void)
{
	UT_INC(group_kernel);
	return 0;
}

/*
 * A buffered atomic write group: pwritev2(fd, iov, cnt, off, RWF_ATOMIC [|
 * RWF_DSYNC | RWF_SYNC | RWF_HIPRI]) on a descriptor the kernel cannot take
 * it on. Carried out as ONE pwritev2(RWF_ATOMIC) of the whole gathered range
 * through the companion O_DIRECT descriptor, or refused with the kernel's
 * errno and nothing written. Returns 1 when handled (*res, errno), 0 when the
 * call goes to the kernel as it is. Called with ut_depth raised.
 */
static int group_write(int fd, const struct iovec *iov, int cnt, off_t off, int flags,
		       ssize_t *res)
{
	UT_INC(group_asked);
	if (flags & ~(RWF_ATOMIC | RWF_HIPRI | RWF_DSYNC | RWF_SYNC)) {
		UT_INC(group_refused[UT_G_FLAGS]);
		return 0; /* RWF_APPEND, RWF_NOWAIT ...: the kernel answers */
	}
	if (cnt <= 0 || off < -1)
		return to_kernel();
	if (cnt > IOV_MAX)
		return refuse(UT_G_SEGMENTS, EINVAL, res);
	size_t len = 0;
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - len)
			return refuse(UT_G_LENGTH, EINVAL, res);
		len += iov[i].iov_len;
	}
	if (len == 0)
		return to_kernel();
	int reason;
	struct ut_fd *e = ut_lookup(fd, &reason, 1);
	if (!e) {
		if (reason == UT_R_NOT_ATOMIC)
			return refuse(UT_G_NOT_ATOMIC, EOPNOTSUPP, res);
		return to_kernel(); /* not a writable regular file: the kernel answers */
	}
	int b = __atomic_load_n(&ut_buffered_atomic, __ATOMIC_ACQUIRE);
	if (e->direct || b == 1) {
		ut_release(e);
		return to_kernel();
	}
	off_t pos = off;
	if (pos < 0 && (pos = lseek(fd, 0, SEEK_CUR)) < 0) {
		ut_release(e);
		return to_kernel();
	}
	int why = -1;
	if (len & (len - 1))
		why = UT_G_LENGTH;
	else if ((uint64_t)pos & (len - 1))
		why = UT_G_ALIGNMENT;
	else if (len < e->unit_min || len > e->unit_max)
		why = UT_G_LENGTH;
	if (why >= 0) {
		ut_release(e);
		return refuse(why, EINVAL, res);
	}
	ssize_t r = -1;
	int unknown = -1, kernel = 0;
	if (b == -1 && __atomic_compare_exchange_n(&ut_buffered_atomic, &unknown, 2, 0,
						   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		/* Does the kernel take buffered RWF_ATOMIC itself? One try per
		 * process, with the group gathered into one segment. */
		r = ut_write_piece(fd, iov, cnt, 0, len, pos, flags, 1);
		int err = errno;
		kernel = r >= 0;
		__atomic_store_n(&ut_buffered_atomic,
				 kernel ? 1 : (err == EOPNOTSUPP || err == EINVAL) ? 0 : -1,
				 __ATOMIC_RELEASE);
		errno = err;
		if (!kernel && err != EOPNOTSUPP && err != EINVAL) {
			ut_release(e);
			UT_INC(write_errors);
			return refuse(UT_G_ERROR, err, res);
		}
	}
	if (!kernel) {
		int c = ut_companion(fd, e);
		if (c < 0) {
			ut_release(e);
			return refuse(UT_G_ERROR, EOPNOTSUPP, res);
		}
		r = ut_write_piece(c, iov, cnt, 0, len, pos, flags | RWF_ATOMIC, e->mem_align);
	}
	int err = errno;
	ut_release(e);
	if (r < 0) {
		UT_INC(write_errors);
		return refuse(UT_G_ERROR, err, res);
	}
	UT_INC(atomic_syscalls);
	UT_INC(atomic_writes);
	UT_ADD(atomic_bytes, (uint64_t)r);
	if (kernel) {
		UT_INC(buffered_atomic);
		UT_INC(group_kernel);
	} else {
		UT_INC(group_done);
	}
	if (off < 0)
		lseek(fd, pos + r, SEEK_SET);
	*res = r;
	return 1;
}

int ut_group_write(int fd, const struct iovec *iov, int cnt, off_t off, int flags, ssize_t *res)
{
	if (ut_depth) {
		UT_PASS(UT_R_NESTED);
		return 0;
	}
	ut_depth++;
	int saved = errno, h = group_write(fd, iov, cnt, off, flags, res);
	if (!h)
		errno = saved;
	ut_depth--;
	return h;
}
