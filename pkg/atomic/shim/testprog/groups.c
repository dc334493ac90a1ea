/*
 * Test program for buffered atomic write groups: pwritev2(..., RWF_ATOMIC) on
 * an ordinary buffered descriptor, as an application that asks for them
 * makes them.
 *
 *   groups FILE atomic   the file's filesystem gives atomic writes: every
 *                        valid group must land, every invalid one must fail
 *                        with the kernel's errno and write nothing
 *   groups FILE none     no atomic writes: every group fails with EOPNOTSUPP
 *
 * Shapes: 1, 2, 4 and 16 buffers (unequal sizes, some at unaligned memory);
 * every power of two from the filesystem's unit min to its unit max; at an
 * offset, at the file position, with RWF_DSYNC; over dirty page cache and a
 * shared mapping. Refused: lengths that are not powers of two, misaligned
 * offsets, lengths outside [unit min, unit max], more than IOV_MAX buffers.
 * After every call the file is compared with a reference copy through
 * buffered reads, the mapping and O_DIRECT reads. Prints one line
 * "group off=<off> len=<len>" per accepted group and a summary
 * "accepted=<n> refused=<n>".
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../src/libuntorn.h"

#ifndef RWF_ATOMIC
#define RWF_ATOMIC 0x40
#endif
#ifndef RWF_DSYNC
#define RWF_DSYNC 0x2
#endif

#define FSIZE (8 << 20)
#define die(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(2); } while (0)

static const char *path;
static int fd, direct_fd;
static unsigned char *ref, *map, *src;
static long accepted, refused;

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* The range [off, off+len) through all three views equals the reference. */
static void check_range(off_t off, size_t len, const char *what)
{
	static unsigned char *buf, *dbuf;
	if (!buf && (!(buf = malloc(FSIZE)) || posix_memalign((void **)&dbuf, 4096, FSIZE)))
		die("malloc");
	if (pread(fd, buf, len, off) != (ssize_t)len || memcmp(buf, ref + off, len))
		die("%s: buffered read of [%lld,+%zu) differs", what, (long long)off, len);
	if (memcmp(map + off, ref + off, len))
		die("%s: mapped view of [%lld,+%zu) differs", what, (long long)off, len);
	off_t a = off & ~(off_t)4095, end = (off + (off_t)len + 4095) & ~(off_t)4095;
	if (pread(direct_fd, dbuf, (size_t)(end - a), a) != (ssize_t)(end - a) ||
	    memcmp(dbuf + (off - a), ref + off, len))
		die("%s: O_DIRECT read of [%lld,+%zu) differs", what, (long long)off, len);
}

/* Splits len bytes at p into n buffers of unequal sizes. */
static int split(struct iovec *v, unsigned char *p, size_t len, int n)
{
	size_t left = len;
	for (int i = 0; i < n; i++) {
		size_t take = i == n - 1 ? left : 1 + rnd() % (left - (size_t)(n - 1 - i));
		if (take > left - (size_t)(n - 1 - i))
			take = left - (size_t)(n - 1 - i);
		v[i].iov_base = p;
		v[i].iov_len = take;
		p += take;
		left -= take;
	}
	return n;
}

/* One group that must land whole. at_pos: at the file position. */
static void group(off_t off, size_t len, int nbuf, int flags, int at_pos, int dirty)
{
	unsigned char *p = src + (rnd() % 2 ? 1 + rnd() % 63 : 0); /* unaligned memory too */
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)rnd();
	if (dirty) {
		/* Dirty page cache inside the range: the group must replace it. */
		unsigned char junk[100];
		memset(junk, 0xee, sizeof junk);
		if (pwrite(fd, junk, sizeof junk, off + 1) != (ssize_t)sizeof junk)
			die("pwrite: %s", strerror(errno));
		memcpy(ref + off + 1, junk, sizeof junk);
	}
	struct iovec v[16];
	int n = split(v, p, len, nbuf);
	ssize_t r;
	if (at_pos) {
		if (lseek(fd, off, SEEK_SET) != off)
			die("lseek");
		r = pwritev2(fd, v, n, -1, flags | RWF_ATOMIC);
		if (r == (ssize_t)len && lseek(fd, 0, SEEK_CUR) != off + (off_t)len)
			die("file position not advanced past the group");
	} else {
		r = pwritev2(fd, v, n, off, flags | RWF_ATOMIC);
	}
	if (r != (ssize_t)len)
		die("group off=%lld len=%zu bufs=%d flags=%#x: %zd (%s)", (long long)off, len, n,
		    flags, r, strerror(errno));
	memcpy(ref + off, p, len);
	printf("group off=%lld len=%zu\n", (long long)off, len);
	accepted++;
	check_range(off, len, "after a group");
}

/* One group that must fail with err and write nothing. */
static void refuse(off_t off, size_t len, int nbuf, int err, const char *why)
{
	static struct iovec v[IOV_MAX + 2];
	for (size_t i = 0; i < len; i++)
		src[i] = (unsigned char)(rnd() | 1);
	int n = nbuf > 16 ? nbuf : split(v, src, len, nbuf);
	if (nbuf > 16)
		for (int i = 0; i < n; i++)
			v[i] = (struct iovec){ src + (size_t)i * (len / (size_t)n), len / (size_t)n };
	errno = 0;
	ssize_t r = pwritev2(fd, v, n, off, RWF_ATOMIC);
	if (r != -1 || errno != err)
		die("%s (off=%lld len=%zu bufs=%d): %zd errno %d (%s), want -1 errno %d", why,
		    (long long)off, len, n, r, errno, strerror(errno), err);
	refused++;
	check_range(off, len, why);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		die("usage: groups FILE atomic|none");
	path = argv[1];
	int atomic = !strcmp(argv[2], "atomic");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, FSIZE) != 0)
		die("open %s: %s", path, strerror(errno));
	direct_fd = open(path, O_RDONLY | O_DIRECT);
	if (direct_fd < 0)
		die("O_DIRECT open: %s", strerror(errno));
	ref = calloc(1, FSIZE);
	map = mmap(NULL, FSIZE, PROT_READ, MAP_SHARED, fd, 0);
	src = malloc(FSIZE + 64);
	if (!ref || map == MAP_FAILED || !src)
		die("setup: %s", strerror(errno));

	/* What the descriptor gives, asked without writing. */
	int (*limits)(int, struct untorn_atomic_limits *, size_t) =
		(int (*)(int, struct untorn_atomic_limits *, size_t))dlsym(RTLD_DEFAULT,
									   "untorn_atomic_limits");
	struct untorn_atomic_limits l;
	memset(&l, 0, sizeof l);
	if (!limits || limits(fd, &l, sizeof l) != 0)
		die("untorn_atomic_limits: %s", limits ? strerror(errno) : "libuntorn is not loaded");
	printf("limits flags=%#x unit_min=%u unit_max=%u unit_max_opt=%u segments_max=%u\n",
	       l.flags, l.unit_min, l.unit_max, l.unit_max_opt, l.segments_max);
	if (!atomic) {
		if (l.flags != 0)
			die("flags %#x on a filesystem without atomic writes", l.flags);
		refuse(0, 16384, 1, EOPNOTSUPP, "no atomic writes, 1 buffer");
		refuse(65536, 16384, 4, EOPNOTSUPP, "no atomic writes, 4 buffers");
		refuse(1 << 20, 4096, 16, EOPNOTSUPP, "no atomic writes, 16 buffers");
		printf("accepted=%ld refused=%ld\n", accepted, refused);
		return 0;
	}
	if (!(l.flags & UNTORN_ATOMIC_BUFFERED) || l.unit_min == 0 || l.unit_max < l.unit_min ||
	    l.segments_max < 16)
		die("limits do not offer buffered groups");
	size_t umin = l.unit_min, umax = l.unit_max > FSIZE / 4 ? FSIZE / 4 : l.unit_max;

	static const int nbufs[] = { 1, 2, 4, 16 };
	for (size_t k = 0; k < sizeof nbufs / sizeof nbufs[0]; k++)
		for (size_t len = umin; len <= umax; len *= 2) {
			off_t off = (off_t)(len * (rnd() % (FSIZE / len)));
			int shape = (int)(rnd() % 4);
			group(off, len, nbufs[k], shape == 1 ? RWF_DSYNC : 0, shape == 2, shape == 3);
		}
	/* The kernel's rules, nothing written on refusal. */
	refuse(0, 3 * umin, 1, EINVAL, "length not a power of two");
	refuse(0, 3 * umin, 4, EINVAL, "length not a power of two, 4 buffers");
	refuse((off_t)umin, 2 * umin, 2, EINVAL, "offset not aligned to the length");
	refuse((off_t)(4 * umin), 8 * umin, 16, EINVAL, "offset not aligned, 16 buffers");
	if (umin > 512)
		refuse(0, umin / 2, 1, EINVAL, "below the unit min");
	if ((size_t)l.unit_max * 2 <= FSIZE)
		refuse(0, (size_t)l.unit_max * 2, 4, EINVAL, "above the unit max");
	refuse(0, (size_t)(IOV_MAX + 1) * 64, IOV_MAX + 1, EINVAL, "more buffers than IOV_MAX");
	check_range(0, FSIZE, "at the end");
	printf("accepted=%ld refused=%ld\n", accepted, refused);
	return 0;
}
