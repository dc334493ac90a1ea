/* abi.h: the layouts of kernel and library structures the shim reads,
 * declared here so that both libcs build (and shared with the test
 * programs that fill them in). */
#ifndef UNTORN_ABI_H
#define UNTORN_ABI_H

#include <stddef.h>
#include <stdint.h>

/* struct statx as of Linux 6.16. */
struct ut_statx {
	uint32_t mask, blksize;
	uint64_t attributes;
	uint32_t nlink, uid, gid;
	uint16_t mode, spare0;
	uint64_t ino, size, blocks, attributes_mask;
	struct { int64_t sec; uint32_t nsec; int32_t pad; } t[4];
	uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
	uint64_t mnt_id;
	uint32_t dio_mem_align, dio_offset_align;
	uint64_t subvol;
	uint32_t awu_min, awu_max, awu_segments_max, dio_read_offset_align;
	uint32_t awu_max_opt, spare2;
	uint64_t spare3[8];
};
_Static_assert(sizeof(struct ut_statx) == 256, "struct statx layout");

/* liburing 2.x public structures (struct io_uring and its rings): the shim
 * reads the prefix up to ring_fd; the test programs build whole ones. */
struct ut_uring_sq {
	unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
	void *sqes;
	unsigned sqe_head, sqe_tail;
	size_t ring_sz;
	void *ring_ptr;
	unsigned ring_mask, ring_entries, pad[2];
};
struct ut_uring_cq {
	unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
	void *cqes;
	size_t ring_sz;
	void *ring_ptr;
	unsigned ring_mask, ring_entries, pad[2];
};
struct ut_uring {
	struct ut_uring_sq sq;
	struct ut_uring_cq cq;
	unsigned flags;
	int ring_fd;
	unsigned features;
	int enter_ring_fd;
	uint8_t int_flags, pad[3];
	unsigned pad2;
};
_Static_assert(__builtin_offsetof(struct ut_uring, flags) == 192, "liburing 2.x layout");

#endif
