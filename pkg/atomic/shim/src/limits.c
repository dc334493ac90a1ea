/* untorn_atomic_limits: what a descriptor gives, without writing. */
#include "untorn.h"
#include "libuntorn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

__attribute__((visibility("default"))) int untorn_atomic_limits(int fd,
								struct untorn_atomic_limits *l,
								size_t size)
{
	struct stat st;
	if (!l || size < sizeof *l) {
		errno = EINVAL;
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		errno = EBADF;
		return -1;
	}
	memset(l, 0, sizeof *l);
	if (!ut_ready() || ut_depth)
		return 0;
	ut_depth++;
	int reason;
	struct ut_fd *e = ut_lookup(fd, &reason, 1);
	if (e) {
		l->unit_min = e->unit_min;
		l->unit_max = e->unit_max;
		l->unit_max_opt = e->max_opt;
		if (e->direct) {
			l->flags = UNTORN_ATOMIC_DIRECT;
			l->segments_max = 1;
		} else {
			/* Buffers are gathered into one before the write. */
			l->flags = UNTORN_ATOMIC_BUFFERED;
			l->segments_max = IOV_MAX;
			if (__atomic_load_n(&ut_buffered_atomic, __ATOMIC_ACQUIRE) == 1)
				l->flags |= UNTORN_ATOMIC_KERNEL;
		}
		ut_release(e);
	}
	ut_depth--;
	return 0;
}
