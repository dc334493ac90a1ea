/*
 * Asynchronous writers: libaio io_submit and liburing's submit functions.
 * Both already write O_DIRECT (the only way they can be made untorn): the
 * shim sets RWF_ATOMIC on each qualifying write before it is submitted.
 */
#include "untorn.h"
#include "abi.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UT_EXPORT __attribute__((visibility("default")))

/* struct iocb of <linux/aio_abi.h> (little-endian layout). */
struct ut_iocb {
	uint64_t data;
	uint32_t key;
	int32_t rw_flags;
	uint16_t opcode;
	int16_t reqprio;
	uint32_t fildes;
	uint64_t buf;
	uint64_t nbytes;
	int64_t offset;
	uint64_t reserved2;
	uint32_t flags;
	uint32_t resfd;
};
_Static_assert(sizeof(struct ut_iocb) == 64, "struct iocb layout");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "struct iocb: only little-endian layouts are handled"
#endif

enum { UT_IOCB_PWRITE = 1, UT_IOCB_PWRITEV = 8 };

struct ut_sqe {
	uint8_t opcode, flags;
	uint16_t ioprio;
	int32_t fd;
	uint64_t off, addr;
	uint32_t len, rw_flags;
};

enum { UT_OP_WRITEV = 2, UT_OP_WRITE_FIXED = 5, UT_OP_WRITE = 23 };
#define UT_IOSQE_FIXED_FILE 1U
#define UT_SETUP_SQE128 (1U << 10)

/*
 * Decides one asynchronous write. Sets RWF_ATOMIC in *rw_flags and returns 1
 * when it qualifies; counts the reason and returns 0 otherwise.
 */
/* Reasons for which strict mode fails an aligned asynchronous write rather
 * than let it go out without RWF_ATOMIC on a filesystem that has atomic
 * writes (the synchronous path would have made it untorn). */
static int strict_fails(int reason)
{
	return ut_cfg.mode == UT_MODE_STRICT &&
	       (reason == UT_R_UNIT_RANGE || reason == UT_R_SEGMENTS ||
		reason == UT_R_UNSPLITTABLE || reason == UT_R_BUFFERED_ASYNC ||
		reason == UT_R_FIXED_FILE || reason == UT_R_URING_LAYOUT);
}

/* Per-call verdict: set when strict mode must fail the whole submission. */
static __thread int ut_strict_veto __attribute__((tls_model("initial-exec")));

static int pass(int reason)
{
	UT_PASS(reason);
	if (strict_fails(reason))
		ut_strict_veto = 1;
	return 0;
}

static int mark(int fd, uint64_t off, uint64_t len, uint64_t nseg, uint32_t *rw_flags)
{
	if (ut_cfg.mode == UT_MODE_OFF) {
		UT_PASS(UT_R_OFF);
		return 0;
	}
	if (*rw_flags & RWF_ATOMIC)
		return 1; /* the caller asked for it itself */
	uint64_t m = ut_cfg.unit ? ut_cfg.unit - 1 : 511;
	if (len == 0 || ((len | off) & m) || (int64_t)off < 0) {
		UT_PASS(UT_R_UNALIGNED);
		return 0;
	}
	if (*rw_flags & RWF_APPEND) {
		UT_PASS(UT_R_APPEND);
		return 0;
	}
	int reason;
	struct ut_fd *e = ut_lookup(fd, &reason, 0);
	if (!e)
		return pass(reason);
	int ok = 0;
	reason = UT_R_UNALIGNED;
	if (!e->direct)
		reason = UT_R_BUFFERED_ASYNC;
	else if (nseg != 1)
		reason = UT_R_SEGMENTS;
	else if (ut_unit_ok(e, len, (off_t)off)) {
		/* One atomic write: a single unit, or a larger power of two the
		 * filesystem takes whole (then the whole range is untorn). */
		if (len == e->unit || ((len & (len - 1)) == 0 && len <= e->unit_max &&
				       (off & (len - 1)) == 0))
			ok = 1;
		else
			reason = UT_R_UNSPLITTABLE;
	}
	ut_release(e);
	if (!ok)
		return pass(reason);
	if (ut_cfg.mode == UT_MODE_DIRECT_BENCH) {
		UT_INC(direct_unsafe);
		return 0;
	}
	*rw_flags |= RWF_ATOMIC;
	UT_INC(atomic_writes);
	UT_ADD(atomic_bytes, len);
	return 1;
}

/* Strict mode: the submission fails whole, nothing submitted. */
static int vetoed(void)
{
	if (!ut_strict_veto)
		return 0;
	ut_strict_veto = 0;
	UT_INC(strict_failures);
	return 1;
}

UT_EXPORT int io_submit(void *ctx, long nr, void **iocbs)
{
	if (!ut_ready() || ut_depth)
		goto submit;
	ut_depth++;
	ut_strict_veto = 0;
	UT_INC(aio_submits);
	for (long i = 0; iocbs && i < nr; i++) {
		struct ut_iocb *cb = iocbs[i];
		if (!cb || (cb->opcode != UT_IOCB_PWRITE && cb->opcode != UT_IOCB_PWRITEV))
			continue;
		uint64_t len = cb->nbytes, nseg = 1;
		if (cb->opcode == UT_IOCB_PWRITEV) {
			const struct iovec *v = (const struct iovec *)(uintptr_t)cb->buf;
			nseg = cb->nbytes;
			len = nseg >= 1 && v ? v[0].iov_len : 0;
			for (uint64_t k = 1; k < nseg && v; k++)
				len += v[k].iov_len;
		}
		uint32_t fl = (uint32_t)cb->rw_flags;
		if (mark((int)cb->fildes, (uint64_t)cb->offset, len, nseg, &fl)) {
			cb->rw_flags = (int32_t)fl;
			UT_INC(aio_atomic);
		}
	}
	ut_stats_maybe_dump();
	ut_depth--;
	if (vetoed())
		return -EIO;
submit:
	if (ut_real.io_submit)
		return ut_real.io_submit(ctx, nr, iocbs);
	long r = syscall(SYS_io_submit, ctx, nr, iocbs);
	return r < 0 ? -errno : (int)r;
}

/* The ring looks like the layout this file copies (liburing 2.x keeps a
 * private copy of the kernel's mask and size next to the pointers to them). */
static int ring_sane(const struct ut_uring *ring)
{
	if (!ring->sq.sqes || !ring->sq.kring_mask || !ring->sq.kring_entries)
		return 0;
	unsigned mask = *ring->sq.kring_mask, entries = *ring->sq.kring_entries;
	if (entries == 0 || mask != entries - 1 || (entries & mask) != 0)
		return 0;
	if (ring->sq.ring_mask != 0 && (ring->sq.ring_mask != mask || ring->sq.ring_entries != entries))
		return 0;
	return ring->sq.sqe_tail - ring->sq.sqe_head <= entries;
}

/* Counts (and, in strict mode, vetoes) the writes of a ring left alone. */
static void skip_ring(void)
{
	UT_PASS(UT_R_URING_LAYOUT);
	if (strict_fails(UT_R_URING_LAYOUT))
		ut_strict_veto = 1;
}

/* Marks the SQEs that the next submit will hand to the kernel. Returns 0,
 * or -EIO when strict mode fails the submission. */
static int mark_ring(void *ringp)
{
	if (!ut_ready() || ut_depth)
		return 0;
	ut_depth++;
	ut_strict_veto = 0;
	UT_INC(uring_submits);
	struct ut_uring *ring = ringp;
	if (!ring) {
		ut_depth--;
		return 0;
	}
	/* A liburing whose ring is not the copied layout: its rings are never
	 * read or written (the pointers in it would be anything). */
	if (!ut_real.uring_layout_ok || !ring_sane(ring)) {
		skip_ring();
		ut_depth--;
		return vetoed() ? -EIO : 0;
	}
	unsigned shift = (ring->flags & UT_SETUP_SQE128) ? 7 : 6;
	unsigned mask = *ring->sq.kring_mask;
	for (unsigned h = ring->sq.sqe_head; h != ring->sq.sqe_tail; h++) {
		struct ut_sqe *s =
			(struct ut_sqe *)((char *)ring->sq.sqes + ((size_t)(h & mask) << shift));
		if (s->opcode != UT_OP_WRITE && s->opcode != UT_OP_WRITEV &&
		    s->opcode != UT_OP_WRITE_FIXED)
			continue;
		if (s->flags & UT_IOSQE_FIXED_FILE) {
			uint64_t m = ut_cfg.unit ? ut_cfg.unit - 1 : 511;
			if (((s->off | s->len) & m) == 0 && s->opcode != UT_OP_WRITEV)
				pass(UT_R_FIXED_FILE); /* aligned: strict mode cannot vouch for it */
			else
				UT_PASS(UT_R_FIXED_FILE);
			continue;
		}
		uint64_t len = s->len, nseg = 1;
		if (s->opcode == UT_OP_WRITEV) {
			const struct iovec *v = (const struct iovec *)(uintptr_t)s->addr;
			nseg = s->len;
			len = 0;
			for (uint64_t k = 0; k < nseg && v; k++)
				len += v[k].iov_len;
		}
		uint32_t fl = s->rw_flags;
		if (mark(s->fd, s->off, len, nseg, &fl)) {
			s->rw_flags = fl;
			UT_INC(uring_atomic);
		}
	}
	ut_stats_maybe_dump();
	ut_depth--;
	return vetoed() ? -EIO : 0;
}

UT_EXPORT int io_uring_submit(void *ring)
{
	if (mark_ring(ring))
		return -EIO;
	return ut_real.uring_submit ? ut_real.uring_submit(ring) : -ENOSYS;
}

UT_EXPORT int io_uring_submit_and_wait(void *ring, unsigned wait_nr)
{
	if (mark_ring(ring))
		return -EIO;
	return ut_real.uring_submit_and_wait ? ut_real.uring_submit_and_wait(ring, wait_nr)
					     : -ENOSYS;
}

UT_EXPORT int io_uring_submit_and_wait_timeout(void *ring, void **cqe, unsigned wait_nr,
					       void *ts, void *sigmask)
{
	if (mark_ring(ring))
		return -EIO;
	return ut_real.uring_submit_and_wait_timeout
		       ? ut_real.uring_submit_and_wait_timeout(ring, cqe, wait_nr, ts, sigmask)
		       : -ENOSYS;
}

UT_EXPORT int io_uring_submit_and_get_events(void *ring)
{
	if (mark_ring(ring))
		return -EIO;
	return ut_real.uring_submit_and_get_events ? ut_real.uring_submit_and_get_events(ring)
						   : -ENOSYS;
}
