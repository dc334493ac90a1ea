/*
 * The public interface of libuntorn.so for programs that want to know what it
 * gives them. Look the functions up with dlsym(RTLD_DEFAULT, ...) so that the
 * program also runs where the library is not preloaded (NULL: no library).
 */
#ifndef LIBUNTORN_H
#define LIBUNTORN_H

#include <stddef.h>

/* What a descriptor gives for atomic write groups, pwritev2(..., RWF_ATOMIC). */
struct untorn_atomic_limits {
	unsigned int flags;        /* UNTORN_ATOMIC_* below; 0: no atomic writes */
	unsigned int unit_min;     /* smallest group, bytes */
	unsigned int unit_max;     /* largest group, bytes */
	unsigned int unit_max_opt; /* largest group the filesystem does fast; 0: no hint */
	unsigned int segments_max; /* most buffers (iovecs) in one group */
	unsigned int reserved[3];
};

/* Buffered (non-O_DIRECT) groups are carried out by the library. */
#define UNTORN_ATOMIC_BUFFERED 0x1u
/* The descriptor is O_DIRECT: the kernel's own atomic writes. */
#define UNTORN_ATOMIC_DIRECT 0x2u
/* The kernel itself takes buffered RWF_ATOMIC (the library passes it on). */
#define UNTORN_ATOMIC_KERNEL 0x4u

/*
 * Fills *l (size: sizeof *l) for fd without writing anything. Returns 0 (flags
 * 0 when fd gives no atomic write groups: not a writable regular file,
 * O_APPEND, a filesystem without atomic writes, UNTORN_MODE=off), or -1 with
 * errno EBADF (fd not open) or EINVAL (l NULL, size too small).
 */
int untorn_atomic_limits(int fd, struct untorn_atomic_limits *l, size_t size);

/* Writes this process's counter line now (UNTORN_STATS_DIR). */
void untorn_stats_dump(void);

#endif
