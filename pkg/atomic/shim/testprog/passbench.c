/*
 * Pass-through cost of libuntorn: times writes that the shim must leave alone
 * (a 100-byte and an 8 KiB pwrite at unaligned offsets of a file on a
 * filesystem without atomic writes, an 8 KiB write to /dev/null).
 *
 *   passbench FILE N
 *   passbench FILE N KIND   (KIND 0, 1, 2: only N calls of that kind, untimed,
 *                            for instruction counts under valgrind)
 *
 * Without the shim it prints plain timings. Under LD_PRELOAD it times, in
 * the same process and in alternating blocks of 1000 calls, the calls
 * through the shim and the same calls straight to libc (looked up in
 * libc.so.6 itself), so that a busy machine slows both alike, and prints
 * both and the overhead. Each figure is the fastest block's time per call:
 * the cost without interference from other work on the machine.
 */
#include <dlfcn.h>
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

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: passbench FILE N [KIND]\n");
		return 2;
	}
	long n = atol(argv[2]);
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
	int nul = open("/dev/null", O_WRONLY);
	if (fd < 0 || nul < 0) {
		perror("open");
		return 2;
	}
	static char buf[8192] = { 1 };
	if (argc == 4) {
		int kind = atoi(argv[3]);
		for (long i = 0; i < n; i++) {
			ssize_t r = kind == 0   ? pwrite(fd, buf, 100, (off_t)(i % 1024) * 100 + 1)
				    : kind == 1 ? write(nul, buf, 8192)
						: pwrite(fd, buf, 8192, (off_t)(i % 64) * 8192 + 1);
			if (r < 0)
				return 1;
		}
		return 0;
	}
	pwrite_fn pw_libc = pwrite;
	write_fn w_libc = write;
	int shim = dlsym(RTLD_DEFAULT, "untorn_stats_dump") != NULL;
	if (shim) {
		void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
		if (!libc || !(pw_libc = (pwrite_fn)dlsym(libc, "pwrite")) || !(w_libc = (write_fn)dlsym(libc, "write"))) {
			fprintf(stderr, "libc not found\n");
			return 2;
		}
	}
	double t[2][3] = { { 1e18, 1e18, 1e18 }, { 1e18, 1e18, 1e18 } };
	for (long done = 0; done < n; done += 1000) {
		for (int via = 0; via < 2; via++) { /* 0: libc directly, 1: default binding */
			pwrite_fn pw = via ? pwrite : pw_libc;
			write_fn w = via ? write : w_libc;
			double t0 = now();
			for (int i = 0; i < 1000; i++)
				if (pw(fd, buf, 100, (off_t)((done + i) % 1024) * 100 + 1) != 100)
					return 1;
			double t1 = now();
			for (int i = 0; i < 1000; i++)
				if (w(nul, buf, 8192) != 8192)
					return 1;
			double t2 = now();
			for (int i = 0; i < 1000; i++)
				if (pw(fd, buf, 8192, (off_t)((done + i) % 64) * 8192 + 1) != 8192)
					return 1;
			double t3 = now();
			if (t1 - t0 < t[via][0])
				t[via][0] = t1 - t0;
			if (t2 - t1 < t[via][1])
				t[via][1] = t2 - t1;
			if (t3 - t2 < t[via][2])
				t[via][2] = t3 - t2;
		}
	}
	double c = 1000;
	if (!shim) {
		printf("unaligned_pwrite_ns=%.1f devnull_write_8k_ns=%.1f unaligned_pwrite_8k_ns=%.1f\n",
		       t[1][0] / c, t[1][1] / c, t[1][2] / c);
		return 0;
	}
	const char *name[3] = { "unaligned_pwrite_100", "devnull_write_8k", "unaligned_pwrite_8k" };
	for (int k = 0; k < 3; k++)
		printf("%s_ns=%.1f libc_%s_ns=%.1f overhead_%s_pct=%.2f%s", name[k], t[1][k] / c, name[k],
		       t[0][k] / c, name[k], (t[1][k] / t[0][k] - 1) * 100, k == 2 ? "\n" : " ");
	return 0;
}
