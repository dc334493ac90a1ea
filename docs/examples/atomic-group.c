/*
 * Buffered atomic write groups under libuntorn: ask what a descriptor gives,
 * then write one 16 KiB group gathered from four buffers that lands whole or
 * not at all. Build: cc -O2 -o atomic-group atomic-group.c -ldl
 * Run:   LD_PRELOAD=/path/libuntorn.so ./atomic-group /untorn-volume/file
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_ATOMIC
#define RWF_ATOMIC 0x00000040 /* Linux 6.11 */
#endif

/* From libuntorn.h (pkg/atomic/shim/src): copied so that this file builds alone. */
struct untorn_atomic_limits {
	unsigned int flags, unit_min, unit_max, unit_max_opt, segments_max, reserved[3];
};
#define UNTORN_ATOMIC_BUFFERED 0x1u

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s FILE\n", argv[0]);
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644); /* an ordinary buffered descriptor */
	if (fd < 0) {
		perror("open");
		return 1;
	}
	/* Found only when libuntorn is preloaded: look it up, do not link it. */
	int (*limits)(int, struct untorn_atomic_limits *, size_t) =
		(int (*)(int, struct untorn_atomic_limits *, size_t))dlsym(RTLD_DEFAULT,
									   "untorn_atomic_limits");
	struct untorn_atomic_limits l = { 0 };
	if (!limits || limits(fd, &l, sizeof l) != 0 || !(l.flags & UNTORN_ATOMIC_BUFFERED) ||
	    l.unit_min > 16384 || l.unit_max < 16384) {
		printf("no buffered atomic write groups of 16 KiB here\n");
		return 0;
	}
	printf("buffered atomic write groups: %u..%u bytes, up to %u buffers\n", l.unit_min,
	       l.unit_max, l.segments_max);

	/* A 16 KiB record made of a header, two bodies and a trailer. */
	static char head[512], body1[8192], body2[7168], tail[512];
	memset(head, 'H', sizeof head);
	memset(body1, '1', sizeof body1);
	memset(body2, '2', sizeof body2);
	memset(tail, 'T', sizeof tail);
	struct iovec v[] = { { head, sizeof head }, { body1, sizeof body1 },
			     { body2, sizeof body2 }, { tail, sizeof tail } };
	/* Length a power of two within [unit_min, unit_max], offset a multiple
	 * of it. RWF_DSYNC: durable when the call returns (without it the group
	 * can still be lost whole in a power cut, never torn). */
	ssize_t n = pwritev2(fd, v, 4, 3 * 16384, RWF_ATOMIC | RWF_DSYNC);
	if (n != 16384) {
		/* EINVAL: the group breaks the rules; EOPNOTSUPP: no atomic writes.
		 * Either way nothing was written. */
		fprintf(stderr, "pwritev2: %s\n", n < 0 ? strerror(errno) : "short write");
		return 1;
	}
	char back[16384];
	if (pread(fd, back, sizeof back, 3 * 16384) != (ssize_t)sizeof back ||
	    back[0] != 'H' || back[600] != '1' || back[9000] != '2' || back[16383] != 'T') {
		fprintf(stderr, "read back differs\n");
		return 1;
	}
	printf("wrote one 16384-byte atomic group from 4 buffers\n");
	close(fd);
	return 0;
}
