/*
 * Test program for libuntorn: writes patterns through every intercepted entry
 * point and checks the file against an in-memory reference copy, through the
 * buffered descriptor, a shared mapping and O_DIRECT reads.
 *
 *   patterns random  FILE UNIT SEED OPS   random offsets, sizes, iovecs
 *   patterns fork    FILE UNIT            fork, then both processes write
 *   patterns dup     FILE UNIT            dup2/dup3/close_range over tracked fds
 *   patterns exec    FILE UNIT SELF       exec of a child that inherits the fd
 *   patterns threads FILE UNIT N          N threads at once
 *   patterns child   FD UNIT OFF          (used by exec)
 *   patterns loop    FILE UNIT SECONDS    aligned writes for a while
 *
 * Prints one line "qualifying=<calls> pieces=<n> other=<calls>": the writes
 * whose offset and length are multiples of UNIT (the ones the shim must make
 * untorn on an atomic filesystem) and the atomic writes they become (one per
 * call where the filesystem takes the whole range, else the largest aligned
 * pieces).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/abi.h"

#define FSIZE (1 << 20)

static size_t unit;
static size_t cap; /* the largest atomic write the shim issues for one call */
static long qual, pieces, other;
static unsigned char *ref;

#define die(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(2); } while (0)

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}


/* Whole-call atomicity: one write call becomes pieces that are powers of two
 * from the unit up to the filesystem's fast limit (unit max without one),
 * each the largest aligned at its offset. */
static void set_cap(int fd)
{
	struct ut_statx x;
	memset(&x, 0, sizeof x);
	cap = unit;
	if (syscall(SYS_statx, fd, "", 0x1000 /* AT_EMPTY_PATH */, 0x10000U, &x) == 0 &&
	    (x.mask & 0x10000U) && x.awu_max >= unit)
		cap = x.awu_max_opt >= unit ? x.awu_max_opt : x.awu_max;
}

static long count_pieces(uint64_t off, size_t len)
{
	long n = 0;
	for (size_t done = 0; done < len; n++) {
		size_t p = unit;
		while (p * 2 <= len - done && p * 2 <= cap && ((off + done) & (p * 2 - 1)) == 0)
			p *= 2;
		done += p;
	}
	return n;
}

static void account(off_t off, size_t len)
{
	if (len > 0 && off % (off_t)unit == 0 && len % unit == 0) {
		__atomic_fetch_add(&qual, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&pieces, count_pieces((uint64_t)off, len), __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&other, 1, __ATOMIC_RELAXED);
	}
}

static void fill(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)rnd();
}

static void check_full(int fd, const unsigned char *want, size_t n, const char *what)
{
	unsigned char *got = malloc(n);
	if (pread(fd, got, n, 0) != (ssize_t)n)
		die("%s: short read: %s", what, strerror(errno));
	for (size_t i = 0; i < n; i++)
		if (got[i] != want[i])
			die("%s: byte %zu differs: got %u want %u", what, i, got[i], want[i]);
	free(got);
}

/* The same contents through O_DIRECT (the disk) and through a mapping. */
static void check_all_views(const char *path, int fd, const unsigned char *want, size_t n)
{
	check_full(fd, want, n, "buffered read");
	unsigned char *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (memcmp(m, want, n) != 0)
		die("mapped view differs from the reference");
	munmap(m, n);
	int d = open(path, O_RDONLY | O_DIRECT);
	if (d >= 0) { /* tmpfs has no O_DIRECT */
		void *b;
		if (posix_memalign(&b, 4096, n))
			die("posix_memalign");
		if (pread(d, b, n, 0) != (ssize_t)n)
			die("direct read: %s", strerror(errno));
		if (memcmp(b, want, n) != 0)
			die("O_DIRECT view differs from the reference");
		free(b);
		close(d);
	}
}

static int open_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, FSIZE) != 0)
		die("open %s: %s", path, strerror(errno));
	set_cap(fd);
	return fd;
}

static void do_pwrite(int fd, off_t off, const unsigned char *src, size_t len)
{
	if (pwrite(fd, src, len, off) != (ssize_t)len)
		die("pwrite off=%lld len=%zu: %s", (long long)off, len, strerror(errno));
	memcpy(ref + off, src, len);
	account(off, len);
}

static void cmd_random(const char *path, long seed, long ops)
{
	rnd_state ^= (uint64_t)seed * 2654435761ULL;
	int fd = open_file(path);
	ref = calloc(1, FSIZE);
	unsigned char *src = malloc(FSIZE + 64);
	unsigned char *m = mmap(NULL, FSIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	for (long i = 0; i < ops; i++) {
		int kind = (int)(rnd() % 8);
		int aligned = kind % 2 == 0;
		size_t len = aligned ? unit * (1 + rnd() % 4) : 1 + rnd() % (3 * unit);
		off_t off = aligned ? (off_t)(unit * (rnd() % (FSIZE / unit - 4)))
				    : (off_t)(rnd() % (FSIZE - 4 * unit));
		unsigned char *s = src + (kind == 6 ? 1 + rnd() % 63 : 0); /* unaligned memory */
		fill(s, len);
		ssize_t r;
		if (kind <= 1 || kind == 6) {
			do_pwrite(fd, off, s, len);
			goto check;
		}
		/* Split into up to 16 iovecs of random sizes. */
		struct iovec v[16];
		int cnt = 0;
		size_t left = len, at = 0;
		while (left > 0) {
			size_t n = cnt == 15 ? left : 1 + rnd() % left;
			v[cnt].iov_base = s + at;
			v[cnt++].iov_len = n;
			at += n;
			left -= n;
		}
		if (kind == 2 || kind == 3) {
			r = pwritev(fd, v, cnt, off);
		} else if (kind == 4 || kind == 7) {
			if (lseek(fd, off, SEEK_SET) != off)
				die("lseek");
			r = kind == 4 ? writev(fd, v, cnt) : write(fd, s, len);
			off_t pos = lseek(fd, 0, SEEK_CUR);
			if (pos != off + (off_t)len)
				die("file position %lld after write, want %lld", (long long)pos,
				    (long long)(off + (off_t)len));
		} else {
#ifdef __GLIBC__
			r = pwritev2(fd, v, cnt, off, kind == 5 ? RWF_DSYNC : 0);
#else /* musl has no pwritev2 */
			r = pwritev(fd, v, cnt, off);
#endif
		}
		if (r != (ssize_t)len)
			die("write kind %d off=%lld len=%zu: %zd %s", kind, (long long)off, len, r,
			    strerror(errno));
		memcpy(ref + off, s, len);
		account(off, len);
	check: {
		/* Read back what was just written, and a random range. */
		unsigned char buf[4 * 8192 + 64];
		if (pread(fd, buf, len, off) != (ssize_t)len || memcmp(buf, ref + off, len))
			die("op %ld: buffered read-back differs (page cache stale)", i);
		if (memcmp(m + off, ref + off, len))
			die("op %ld: mapped view differs after write", i);
	}
	}
	munmap(m, FSIZE);
	check_all_views(path, fd, ref, FSIZE);
	close(fd);
}

static void child_page(unsigned char *p, int i)
{
	for (size_t k = 0; k < 2 * unit; k++)
		p[k] = (unsigned char)(k * 13 + (size_t)i * 31 + 1);
}

static void cmd_fork(const char *path)
{
	int fd = open_file(path);
	ref = calloc(1, FSIZE);
	unsigned char *pg = malloc(4 * unit);
	fill(pg, unit);
	do_pwrite(fd, 0, pg, unit); /* the parent has a companion before fork */
	fflush(stdout);
	pid_t c = fork();
	if (c == 0) {
		qual = pieces = other = 0;
		for (int i = 0; i < 32; i++) {
			child_page(pg, i);
			do_pwrite(fd, (off_t)(unit * (2 + 4 * i)), pg, 2 * unit);
		}
		/* the file position is shared with the parent: write() at it */
		if (lseek(fd, (off_t)(unit * 4), SEEK_SET) < 0 || write(fd, pg, unit) != (ssize_t)unit)
			die("child write: %s", strerror(errno));
		account((off_t)(unit * 4), unit);
		printf("qualifying=%ld pieces=%ld other=%ld\n", qual, pieces, other);
		exit(0); /* exit handlers run: the child's counters are saved */
	}
	for (int i = 0; i < 32; i++) {
		fill(pg, unit);
		do_pwrite(fd, (off_t)(unit * (4 * i + 1)), pg, unit);
	}
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("child failed");
	for (int i = 0; i < 32; i++) {
		child_page(ref + unit * (2 + 4 * i), i);
	}
	child_page(pg, 31);
	memcpy(ref + unit * 4, pg, unit);
	if (lseek(fd, 0, SEEK_CUR) != (off_t)(unit * 5))
		die("shared file position not advanced by the child's write()");
	check_all_views(path, fd, ref, FSIZE);
}

/* Numbers this process has open on path other than except (the companions). */
static int others_on(const char *path, int except)
{
	char want[4096], link[64], got[4096];
	if (!realpath(path, want))
		die("realpath");
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1;
	while ((de = readdir(d))) {
		int n = atoi(de->d_name);
		if (de->d_name[0] == '.' || n == except || n == dirfd(d))
			continue;
		snprintf(link, sizeof link, "/proc/self/fd/%d", n);
		ssize_t l = readlink(link, got, sizeof got - 1);
		if (l > 0 && (got[l] = 0, !strcmp(got, want)))
			found = n;
	}
	closedir(d);
	return found;
}

static void expect_page(const char *path, off_t off, const unsigned char *want)
{
	int fd = open(path, O_RDONLY);
	unsigned char *got = malloc(unit);
	if (pread(fd, got, unit, off) != (ssize_t)unit || memcmp(got, want, unit))
		die("%s at %lld does not hold the expected page", path, (long long)off);
	free(got);
	close(fd);
}

static void cmd_dup(const char *path)
{
	char pb[4096], pc[4096];
	snprintf(pb, sizeof pb, "%s.b", path);
	snprintf(pc, sizeof pc, "%s.c", path);
	ref = calloc(1, FSIZE);
	unsigned char *p1 = malloc(unit), *p2 = malloc(unit), *p3 = malloc(unit);
	fill(p1, unit), fill(p2, unit), fill(p3, unit);
	int a = open_file(path), b = open_file(pb);
	do_pwrite(a, 0, p1, unit);
	int comp = others_on(path, a);
	/* 1. dup2 a file over the tracked number: writes must follow it. */
	if (dup2(b, a) != a)
		die("dup2");
	do_pwrite(a, (off_t)unit, p2, unit);
	expect_page(pb, (off_t)unit, p2);
	char z[1] = {0};
	int za = open(path, O_RDONLY);
	unsigned char *got = malloc(unit);
	if (pread(za, got, unit, (off_t)unit) != (ssize_t)unit)
		die("read a");
	if (memcmp(got, p2, unit) == 0)
		die("write after dup2 went to the old file");
	(void)z;
	close(za);
	/* 2. dup2 over the companion number (if the shim made one). */
	int a2 = open(path, O_RDWR);
	do_pwrite(a2, 2 * (off_t)unit, p1, unit);
	comp = others_on(path, a2);
	if (comp >= 0) {
		if (dup3(b, comp, 0) != comp)
			die("dup3 over companion");
		do_pwrite(a2, 3 * (off_t)unit, p3, unit);
		expect_page(path, 3 * (off_t)unit, p3);
		/* b's copy at comp must not have received a2's page. */
		int zb = open(pb, O_RDONLY);
		if (pread(zb, got, unit, 3 * (off_t)unit) == (ssize_t)unit && !memcmp(got, p3, unit))
			die("write went to the file dup'ed over the companion");
		close(zb);
		close(comp);
	}
	/* 3. close_range over the tracked number, then reuse it for file c. */
#ifdef __GLIBC__
	if (close_range((unsigned)a2, (unsigned)a2, 0) != 0)
		die("close_range");
#else /* musl has no close_range: the shim's own is reached by name */
	int (*cr)(unsigned, unsigned, int) = (int (*)(unsigned, unsigned, int))dlsym(RTLD_DEFAULT, "close_range");
	if (cr ? cr((unsigned)a2, (unsigned)a2, 0) != 0 : close(a2) != 0)
		die("close_range");
#endif
	int c = open_file(pc);
	if (c != a2 && dup2(c, a2) != a2)
		die("dup2 c");
	do_pwrite(a2, 4 * (off_t)unit, p2, unit);
	expect_page(pc, 4 * (off_t)unit, p2);
	/* 4. close, then the number comes back as a pipe: must pass through. */
	close(a2);
	if (c != a2)
		close(c);
	int pp[2];
	if (pipe(pp))
		die("pipe");
	if (write(pp[1], p1, 512) != 512)
		die("write to pipe");
	printf("companion=%d\n", comp);
}

static void cmd_exec(const char *path, const char *self)
{
	int fd = open_file(path);
	ref = calloc(1, FSIZE);
	unsigned char *pg = malloc(unit);
	fill(pg, unit);
	do_pwrite(fd, 0, pg, unit); /* companion exists now */
	char fds[16], us[32], offs[32];
	snprintf(fds, sizeof fds, "%d", fd);
	snprintf(us, sizeof us, "%zu", unit);
	snprintf(offs, sizeof offs, "%zu", 5 * unit);
	fflush(stdout);
	pid_t c = fork();
	if (c == 0) {
		char *argv[] = { (char *)self, "child", fds, us, offs, NULL };
		execv(self, argv);
		_exit(127);
	}
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("exec child failed: %d", st);
	unsigned char *got = malloc(unit);
	if (pread(fd, got, unit, 5 * (off_t)unit) != (ssize_t)unit)
		die("read");
	for (size_t i = 0; i < unit; i++)
		if (got[i] != (unsigned char)(i * 7 + 3))
			die("exec child's page missing");
	memcpy(ref + 5 * unit, got, unit);
	check_all_views(path, fd, ref, FSIZE);
}

static void cmd_child(int fd, off_t off)
{
	/* No companion may have crossed exec: only fd refers to the file. */
	char link[64], path[4096];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t l = readlink(link, path, sizeof path - 1);
	if (l <= 0)
		die("inherited fd missing");
	path[l] = 0;
	if (others_on(path, fd) >= 0)
		die("a companion descriptor leaked across exec");
	unsigned char *pg = malloc(unit);
	for (size_t i = 0; i < unit; i++)
		pg[i] = (unsigned char)(i * 7 + 3);
	ref = calloc(1, FSIZE);
	do_pwrite(fd, off, pg, unit);
}

struct targ { int fd, id; };
static void *thread_main(void *p)
{
	struct targ *a = p;
	size_t region = FSIZE / 8;
	unsigned char *pg = malloc(4 * unit);
	uint64_t s = 1469598103934665603ULL * (uint64_t)(a->id + 1);
	for (int i = 0; i < 200; i++) {
		size_t k = 1 + (size_t)(s % 2);
		for (size_t j = 0; j < k * unit; j++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			pg[j] = (unsigned char)s;
		}
		off_t off = (off_t)(a->id * region + unit * (s % (region / unit - 2)));
		if (pwrite(a->fd, pg, k * unit, off) != (ssize_t)(k * unit))
			die("thread pwrite: %s", strerror(errno));
		memcpy(ref + off, pg, k * unit);
		account(off, k * unit);
		static __thread unsigned char back[2 * 65536];
		if (pread(a->fd, back, k * unit, off) != (ssize_t)(k * unit) ||
		    memcmp(back, pg, k * unit))
			die("thread read-back differs");
	}
	free(pg);
	return NULL;
}

static void cmd_threads(const char *path, int n)
{
	int fd = open_file(path);
	ref = calloc(1, FSIZE);
	pthread_t t[8];
	struct targ a[8];
	if (n > 8)
		n = 8;
	for (int i = 0; i < n; i++) {
		a[i] = (struct targ){ fd, i };
		pthread_create(&t[i], NULL, thread_main, &a[i]);
	}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	check_all_views(path, fd, ref, FSIZE);
}

static void cmd_loop(const char *path, int seconds)
{
	int fd = open_file(path);
	ref = calloc(1, FSIZE);
	unsigned char *pg = malloc(unit);
	time_t end = time(NULL) + seconds;
	for (long i = 0; time(NULL) < end; i++) {
		fill(pg, unit);
		do_pwrite(fd, (off_t)(unit * (size_t)(i % (FSIZE / unit))), pg, unit);
		usleep(2000);
	}
	check_all_views(path, fd, ref, FSIZE);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: patterns random|fork|dup|exec|threads|child FILE UNIT ...");
	unit = strtoul(argv[3], NULL, 10);
	if (unit < 512 || unit > 65536)
		die("bad unit");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "random") && argc == 6)
		cmd_random(argv[2], atol(argv[4]), atol(argv[5]));
	else if (!strcmp(cmd, "fork"))
		cmd_fork(argv[2]);
	else if (!strcmp(cmd, "dup"))
		cmd_dup(argv[2]);
	else if (!strcmp(cmd, "exec") && argc == 5)
		cmd_exec(argv[2], argv[4]);
	else if (!strcmp(cmd, "threads") && argc == 5)
		cmd_threads(argv[2], atoi(argv[4]));
	else if (!strcmp(cmd, "loop") && argc == 5)
		cmd_loop(argv[2], atoi(argv[4]));
	else if (!strcmp(cmd, "child") && argc == 5)
		cmd_child(atoi(argv[2]), (off_t)atol(argv[4]));
	else
		die("bad arguments");
	printf("qualifying=%ld pieces=%ld other=%ld\n", qual, pieces, other);
	return 0;
}
