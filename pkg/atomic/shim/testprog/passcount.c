/*
 * Known numbers of writes through every write entry point, from the main
 * thread and from new threads (a thread's first write the library counts
 * takes its slow path), for the counter test:
 *
 *   passcount FILE N THREADS
 *
 * Per thread: N rounds of five unaligned writes to FILE (pwrite, pwritev of
 * two buffers, pwritev2 at an offset and at the file position, write) and
 * two 8 KiB writes to /dev/null (write, writev), then one aligned 8 KiB
 * pwrite to FILE (atomic where FILE's filesystem gives it).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

static int fd, nul;
static long n;
static char buf[8192] __attribute__((aligned(4096)));

static void check(long got, long want, const char *what)
{
	if (got != want) {
		fprintf(stderr, "%s returned %ld, want %ld\n", what, got, want);
		exit(1);
	}
}

static void *work(void *arg)
{
	long t = (long)arg;
	for (long i = 0; i < n; i++) {
		off_t off = (off_t)((t * n + i) % 4096) * 100 + 8192 + 1;
		struct iovec two[2] = { { buf, 50 }, { buf + 50, 50 } }, one = { buf, 8192 };
		check(pwrite(fd, buf, 100, off), 100, "pwrite");
		check(pwritev(fd, two, 2, off), 100, "pwritev");
		check(pwritev2(fd, two, 2, off, 0), 100, "pwritev2");
		check(pwritev2(fd, two, 2, -1, 0), 100, "pwritev2 at the position");
		check(write(fd, buf, 100), 100, "write");
		check(write(nul, buf, 8192), 8192, "write /dev/null");
		check(writev(nul, &one, 1), 8192, "writev /dev/null");
	}
	check(pwrite(fd, buf, 8192, 0), 8192, "aligned pwrite");
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: passcount FILE N THREADS\n");
		return 2;
	}
	n = atol(argv[2]);
	int threads = atoi(argv[3]);
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
	nul = open("/dev/null", O_WRONLY);
	if (fd < 0 || nul < 0) {
		perror("open");
		return 2;
	}
	work((void *)0);
	for (long t = 1; t <= threads; t++) {
		pthread_t th;
		if (pthread_create(&th, NULL, work, (void *)t) != 0 || pthread_join(th, NULL) != 0)
			return 2;
	}
	return 0;
}
