/*
 * A stand-in for liburing whose version is FAKE_URING_MAJOR (default 3): its
 * ring layout is not the one libuntorn copies, so libuntorn must not touch
 * its rings. io_uring_submit reports whether the first SQE reached it with
 * RWF_ATOMIC set in fake_uring_marked().
 */
#include <stdint.h>
#include <stdlib.h>

static int marked = -1;

__attribute__((visibility("default"))) int fake_uring_marked(void) { return marked; }

__attribute__((visibility("default"))) int io_uring_major_version(void)
{
	const char *v = getenv("FAKE_URING_MAJOR");
	return v ? atoi(v) : 3;
}

__attribute__((visibility("default"))) int io_uring_minor_version(void) { return 0; }

/* struct io_uring of liburing 2.x, the part the test program fills in. */
struct sq {
	unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
	void *sqes;
	unsigned sqe_head, sqe_tail;
};

__attribute__((visibility("default"))) int io_uring_submit(void *ring)
{
	struct sq *sq = ring;
	const uint8_t *sqe = sq->sqes;
	uint32_t rw_flags = *(const uint32_t *)(sqe + 28);
	marked = (rw_flags & 0x40) != 0;
	return (int)(sq->sqe_tail - sq->sqe_head);
}
