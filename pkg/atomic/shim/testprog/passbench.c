/*
 * Pass-through cost of libuntorn: times N small writes that the shim must
 * leave alone (unaligned pwrite to a file, write to /dev/null) and prints
 * nanoseconds per call. Run it with and without LD_PRELOAD and compare.
 *
 *   passbench FILE N
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: passbench FILE N\n");
		return 2;
	}
	long n = atol(argv[2]);
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
	int nul = open("/dev/null", O_WRONLY);
	if (fd < 0 || nul < 0) {
		perror("open");
		return 2;
	}
	char buf[8192] = { 1 };
	double t0 = now();
	for (long i = 0; i < n; i++)
		if (pwrite(fd, buf, 100, (off_t)(i % 1024) * 100 + 1) != 100)
			return 1;
	double t1 = now();
	for (long i = 0; i < n; i++)
		if (write(nul, buf, 8192) != 8192)
			return 1;
	double t2 = now();
	printf("unaligned_pwrite_ns=%.1f devnull_write_8k_ns=%.1f\n", (t1 - t0) / (double)n,
	       (t2 - t1) / (double)n);
	return 0;
}
