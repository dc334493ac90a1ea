/*
 * Test program for libuntorn's asynchronous paths on an O_DIRECT file:
 *
 *   asyncw aio   FILE UNIT   libaio io_submit (PWRITE, PWRITEV)
 *   asyncw uring FILE UNIT   liburing io_uring_submit (WRITE, WRITEV)
 *
 * Submits a fixed mix of writes, checks after submission which of them carry
 * RWF_ATOMIC (the flag the shim sets in the caller's iocb/SQE), waits for all
 * completions and checks the file contents. Prints "marked=<bitmask of the
 * writes that carried RWF_ATOMIC> qualifying=<bitmask of the writes that can
 * be one atomic write on an atomic filesystem>".
 */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef RWF_ATOMIC
#define RWF_ATOMIC 0x40
#endif

/* The shim reads liburing's public ring structure by layout. */
_Static_assert(offsetof(struct io_uring, flags) == 192, "liburing io_uring layout");
_Static_assert(offsetof(struct io_uring_sq, sqe_head) == 64, "liburing sq layout");

#define die(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(2); } while (0)

struct req { off_t off; size_t len; int nseg; int qualifies; };

static size_t unit;

/* The mix: single units, a 2-unit power of two (one atomic write), a 3-unit
 * write (cannot be one atomic write), a two-segment vector, an unaligned one. */
static int plan(struct req *r)
{
	int n = 0;
	for (int i = 0; i < 8; i++)
		r[n++] = (struct req){ (off_t)(unit * (size_t)i), unit, 1, 1 };
	r[n++] = (struct req){ (off_t)(unit * 8), 2 * unit, 1, 1 };
	r[n++] = (struct req){ (off_t)(unit * 12), 3 * unit, 1, 0 };
	r[n++] = (struct req){ (off_t)(unit * 16), 2 * unit, 2, 0 };
	r[n++] = (struct req){ (off_t)(unit * 20 + 512), unit, 1, 0 };
	return n;
}

static unsigned char *fill(size_t len, int seed)
{
	unsigned char *p;
	if (posix_memalign((void **)&p, 4096, len))
		die("posix_memalign");
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 7 + (size_t)seed * 13 + 1);
	return p;
}

static void verify(int fd, struct req *r, int n)
{
	for (int i = 0; i < n; i++) {
		unsigned char *want = fill(r[i].len, i), *got;
		if (posix_memalign((void **)&got, 4096, r[i].len + 4096))
			die("posix_memalign");
		if (pread(fd, got, r[i].len, r[i].off) != (ssize_t)r[i].len)
			die("read back: %s", strerror(errno));
		if (memcmp(got, want, r[i].len))
			die("write %d: contents differ", i);
		free(want);
		free(got);
	}
}

static int run_aio(int fd, struct req *r, int n)
{
	io_context_t ctx = 0;
	if (io_setup(64, &ctx))
		die("io_setup");
	struct iocb cbs[16], *ptrs[16];
	struct iovec iov[16][2];
	for (int i = 0; i < n; i++) {
		unsigned char *b = fill(r[i].len, i);
		if (r[i].nseg == 1 && i % 2 == 0) {
			io_prep_pwrite(&cbs[i], fd, b, r[i].len, r[i].off);
		} else {
			size_t h = r[i].nseg == 2 ? r[i].len / 2 : r[i].len;
			iov[i][0] = (struct iovec){ b, h };
			iov[i][1] = (struct iovec){ b + h, r[i].len - h };
			io_prep_pwritev(&cbs[i], fd, iov[i], r[i].nseg, r[i].off);
		}
		ptrs[i] = &cbs[i];
	}
	if (io_submit(ctx, n, ptrs) != n)
		die("io_submit");
	int marked = 0;
	for (int i = 0; i < n; i++)
		marked |= ((cbs[i].aio_rw_flags & RWF_ATOMIC) != 0) << i;
	struct io_event ev[16];
	int got = 0;
	while (got < n) {
		int k = io_getevents(ctx, 1, n - got, ev, NULL);
		if (k < 0)
			die("io_getevents: %d", k);
		for (int j = 0; j < k; j++)
			if ((long)ev[j].res < 0)
				die("aio write failed: %s", strerror((int)-(long)ev[j].res));
		got += k;
	}
	io_destroy(ctx);
	return marked;
}

static int run_uring(int fd, struct req *r, int n)
{
	struct io_uring ring;
	int e = io_uring_queue_init(32, &ring, 0);
	if (e)
		die("io_uring_queue_init: %s", strerror(-e));
	struct io_uring_sqe *sqes[16];
	struct iovec iov[16][2];
	for (int i = 0; i < n; i++) {
		unsigned char *b = fill(r[i].len, i);
		sqes[i] = io_uring_get_sqe(&ring);
		if (r[i].nseg == 1 && i % 2 == 0) {
			io_uring_prep_write(sqes[i], fd, b, (unsigned)r[i].len, (uint64_t)r[i].off);
		} else {
			size_t h = r[i].nseg == 2 ? r[i].len / 2 : r[i].len;
			iov[i][0] = (struct iovec){ b, h };
			iov[i][1] = (struct iovec){ b + h, r[i].len - h };
			io_uring_prep_writev(sqes[i], fd, iov[i], (unsigned)r[i].nseg,
					     (uint64_t)r[i].off);
		}
	}
	int s = io_uring_submit(&ring);
	if (s != n)
		die("io_uring_submit: %d", s);
	int marked = 0;
	for (int i = 0; i < n; i++)
		marked |= ((sqes[i]->rw_flags & RWF_ATOMIC) != 0) << i;
	for (int i = 0; i < n; i++) {
		struct io_uring_cqe *cqe;
		if (io_uring_wait_cqe(&ring, &cqe))
			die("wait_cqe");
		if (cqe->res < 0)
			die("uring write failed: %s", strerror(-cqe->res));
		io_uring_cqe_seen(&ring, cqe);
	}
	io_uring_queue_exit(&ring);
	return marked;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		die("usage: asyncw aio|uring FILE UNIT");
	unit = strtoul(argv[3], NULL, 10);
	int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
	if (fd < 0 || ftruncate(fd, 1 << 20))
		die("open %s: %s", argv[2], strerror(errno));
	struct req r[16];
	int n = plan(r), q = 0;
	for (int i = 0; i < n; i++)
		q |= r[i].qualifies << i;
	int marked = !strcmp(argv[1], "aio") ? run_aio(fd, r, n) : run_uring(fd, r, n);
	verify(fd, r, n);
	printf("marked=%#x qualifying=%#x\n", (unsigned)marked, (unsigned)q);
	return 0;
}
