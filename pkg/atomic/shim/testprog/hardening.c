/*
 * Test program for libuntorn inside a threaded, signal-handling process.
 *
 *   hardening closerange FILE OTHER ITERS  a writer thread writes pages of
 *       FILE while another thread closes the library's companion with
 *       close_range and a third opens and writes OTHER behind the library's
 *       back (a raw openat, as libc's own fopen does): every page write must
 *       succeed and land in FILE, OTHER must hold only its own bytes
 *   hardening signal FILE SIG ITERS  a timer signal whose handler writes a
 *       page of SIG while the main thread classifies new descriptors (opens
 *       FILE, writes a page, closes): must not deadlock; both files right
 *   hardening cancel FIFO           a thread blocked in open() of a FIFO must
 *       be cancellable (open is a cancellation point of libc)
 *   hardening nextopen FILE         open/openat/creat/dup/fcntl must reach a
 *       preload library loaded after libuntorn (libnextopen.so)
 *   hardening uring FILE            io_uring_submit of a libfakeuring.so ring
 *       holding one aligned write SQE on an O_DIRECT FILE; prints
 *       "marked=<0|1> ret=<n>"
 *
 * All use an 8 KiB unit. Exit 0 when the checks pass.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../src/abi.h"

#define UNIT 8192
#define PAGES 64
#define die(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(2); } while (0)

static void page(unsigned char *p, unsigned seed)
{
	for (size_t i = 0; i < UNIT; i++)
		p[i] = (unsigned char)(i * 31 + seed * 7 + 1);
}

static void check_file(const char *path, const unsigned *seeds, int pages)
{
	int fd = open(path, O_RDONLY);
	unsigned char got[UNIT], want[UNIT];
	for (int i = 0; i < pages; i++) {
		page(want, seeds[i]);
		if (pread(fd, got, UNIT, (off_t)i * UNIT) != UNIT || memcmp(got, want, UNIT))
			die("%s: page %d is not the last one written", path, i);
	}
	close(fd);
}

/* ---- closerange ---- */
static int cr_fd;
static long cr_iters;
static volatile int cr_stop;
static unsigned cr_seeds[PAGES];
static const char *cr_path, *cr_other;

/* The number of the library's companion of cr_fd: another descriptor on the
 * same file that the program did not open. */
static int companion_of(int fd)
{
	struct stat a, b;
	if (fstat(fd, &a))
		return -1;
	for (int n = 3; n < 64; n++)
		if (n != fd && fstat(n, &b) == 0 && b.st_dev == a.st_dev && b.st_ino == a.st_ino)
			return n;
	return -1;
}

static void *cr_writer(void *arg)
{
	(void)arg;
	unsigned char pg[UNIT];
	for (long i = 0; i < cr_iters; i++) {
		int k = (int)(i % PAGES);
		page(pg, (unsigned)i);
		ssize_t r = pwrite(cr_fd, pg, UNIT, (off_t)k * UNIT);
		if (r != UNIT)
			die("page write %ld: %zd (%s)", i, r, strerror(errno));
		cr_seeds[k] = (unsigned)i;
	}
	cr_stop = 1;
	return NULL;
}

static void *cr_closer(void *arg)
{
	(void)arg;
	while (!cr_stop) {
		int c = companion_of(cr_fd);
		if (c >= 0)
			close_range((unsigned)c, (unsigned)c, 0);
		sched_yield();
	}
	return NULL;
}

static void *cr_opener(void *arg)
{
	(void)arg;
	long n = 0;
	while (!cr_stop) {
		/* Behind the library's back, as libc's fopen opens. */
		int o = (int)syscall(SYS_openat, AT_FDCWD, cr_other, O_WRONLY | O_APPEND);
		if (o < 0)
			die("open other: %s", strerror(errno));
		if (syscall(SYS_write, o, "x", 1) != 1)
			die("write to other (descriptor %d closed under it?): %s", o, strerror(errno));
		syscall(SYS_close, o);
		n++;
	}
	return (void *)n;
}

static int cmd_closerange(void)
{
	cr_fd = open(cr_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	int o = open(cr_other, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (cr_fd < 0 || o < 0 || ftruncate(cr_fd, PAGES * UNIT))
		die("open: %s", strerror(errno));
	close(o);
	pthread_t w, c, p;
	void *opened;
	pthread_create(&p, NULL, cr_opener, NULL);
	pthread_create(&c, NULL, cr_closer, NULL);
	pthread_create(&w, NULL, cr_writer, NULL);
	pthread_join(w, NULL);
	pthread_join(c, NULL);
	pthread_join(p, &opened);
	check_file(cr_path, cr_seeds, PAGES);
	struct stat st;
	if (stat(cr_other, &st) || st.st_size != (off_t)(long)opened)
		die("%s has %lld bytes, want %ld: page writes went to it", cr_other,
		    (long long)st.st_size, (long)opened);
	printf("writes=%ld other=%ld\n", cr_iters, (long)opened);
	return 0;
}

/* ---- signal ---- */
static int sig_fd;
static volatile long sig_writes;
static unsigned sig_seeds[PAGES];

static void on_timer(int s)
{
	(void)s;
	int saved = errno;
	static unsigned char pg[UNIT];
	long i = sig_writes;
	page(pg, (unsigned)i + 1000);
	/* A write the library has not classified yet (the main loop forgets
	 * the descriptor with F_SETFL before each of its own classifications). */
	if (pwrite(sig_fd, pg, UNIT, (off_t)(i % PAGES) * UNIT) != UNIT)
		_exit(3);
	sig_seeds[i % PAGES] = (unsigned)i + 1000;
	sig_writes = i + 1;
	errno = saved;
}

static int cmd_signal(const char *path, const char *sigpath, long iters)
{
	sig_fd = open(sigpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (sig_fd < 0 || ftruncate(sig_fd, PAGES * UNIT))
		die("open %s: %s", sigpath, strerror(errno));
	unsigned char pg[UNIT];
	unsigned seeds[PAGES];
	for (int i = 0; i < PAGES; i++) {
		page(pg, 1000u + (unsigned)i);
		if (pwrite(sig_fd, pg, UNIT, (off_t)i * UNIT) != UNIT)
			die("initial page");
		sig_seeds[i] = 1000u + (unsigned)i;
	}
	sig_writes = PAGES;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_timer;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
	setitimer(ITIMER_REAL, &it, NULL);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, PAGES * UNIT))
		die("open %s: %s", path, strerror(errno));
	close(fd);
	for (long i = 0; i < iters; i++) {
		fcntl(sig_fd, F_SETFL, 0); /* the library forgets sig_fd */
		fd = open(path, O_RDWR);   /* a number to classify */
		page(pg, (unsigned)i);
		if (fd < 0 || pwrite(fd, pg, UNIT, (off_t)(i % PAGES) * UNIT) != UNIT)
			die("main write %ld: %s", i, strerror(errno));
		seeds[i % PAGES] = (unsigned)i;
		close(fd);
	}
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	check_file(path, seeds, (int)(iters < PAGES ? iters : PAGES));
	check_file(sigpath, sig_seeds, PAGES);
	printf("main=%ld handler=%ld\n", iters, sig_writes - PAGES);
	return 0;
}

/* ---- cancel ---- */
static void *blocked_open(void *p)
{
	open((const char *)p, O_RDONLY); /* blocks: no writer */
	return NULL;
}

static int cmd_cancel(const char *fifo)
{
	unlink(fifo);
	if (mkfifo(fifo, 0600))
		die("mkfifo: %s", strerror(errno));
	pthread_t t;
	pthread_create(&t, NULL, blocked_open, (void *)fifo);
	usleep(200000);
	pthread_cancel(t);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	void *res;
	if (pthread_timedjoin_np(t, &res, &ts) != 0)
		die("open() of a FIFO was not a cancellation point under the library");
	if (res != PTHREAD_CANCELED)
		die("thread not cancelled");
	printf("cancelled\n");
	return 0;
}

/* ---- nextopen ---- */
static int cmd_nextopen(const char *path)
{
	long *(*counts)(void) = (long *(*)(void))dlsym(RTLD_DEFAULT, "nextopen_counts");
	if (!counts)
		die("libnextopen.so is not loaded");
	int a = open(path, O_RDWR | O_CREAT, 0644);
	int b = openat(AT_FDCWD, path, O_RDWR);
	int c = creat(path, 0644);
	int d = dup(a);
	int e = fcntl(a, F_DUPFD_CLOEXEC, 10);
	if (a < 0 || b < 0 || c < 0 || d < 0 || e < 0)
		die("descriptor calls failed");
	long *n = counts();
	printf("open=%ld openat=%ld creat=%ld dup=%ld fcntl=%ld\n", n[0], n[1], n[2], n[3], n[4]);
	for (int i = 0; i < 5; i++)
		if (n[i] == 0)
			die("call %d did not reach the next preload library", i);
	return 0;
}

/* ---- uring ---- */

static int cmd_uring(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0644);
	if (fd < 0)
		die("open: %s", strerror(errno));
	static unsigned mask = 7, entries = 8, head, tail;
	static uint8_t sqes[8 * 64] __attribute__((aligned(64)));
	static char buf[UNIT] __attribute__((aligned(4096)));
	struct ut_uring ring;
	memset(&ring, 0, sizeof ring);
	ring.sq.khead = &head;
	ring.sq.ktail = &tail;
	ring.sq.kring_mask = &mask;
	ring.sq.kring_entries = &entries;
	ring.sq.sqes = sqes;
	ring.sq.sqe_tail = 1;
	ring.sq.ring_mask = mask;
	ring.sq.ring_entries = entries;
	ring.ring_fd = -1;
	sqes[0] = 23; /* IORING_OP_WRITE */
	*(int32_t *)(sqes + 4) = fd;
	*(uint64_t *)(sqes + 8) = 0;                     /* off */
	*(uint64_t *)(sqes + 16) = (uintptr_t)buf;        /* addr */
	*(uint32_t *)(sqes + 24) = UNIT;                 /* len */
	int (*submit)(void *) = (int (*)(void *))dlsym(RTLD_DEFAULT, "io_uring_submit");
	int (*marked)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "fake_uring_marked");
	if (!submit || !marked)
		die("libfakeuring.so is not loaded");
	int r = submit(&ring);
	printf("marked=%d ret=%d\n", marked() == 1 || (*(uint32_t *)(sqes + 28) & 0x40) != 0, r);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "closerange")) {
		cr_path = argv[2];
		cr_other = argv[3];
		cr_iters = atol(argv[4]);
		return cmd_closerange();
	}
	if (argc >= 5 && !strcmp(argv[1], "signal"))
		return cmd_signal(argv[2], argv[3], atol(argv[4]));
	if (argc >= 3 && !strcmp(argv[1], "cancel"))
		return cmd_cancel(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "nextopen"))
		return cmd_nextopen(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "uring"))
		return cmd_uring(argv[2]);
	die("usage: hardening closerange|signal|cancel|nextopen|uring ...");
}
