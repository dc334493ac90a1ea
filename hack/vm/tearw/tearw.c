/*
 * tearw: the crash model's writer for buffered writes, in C so that the
 * untorn shim (LD_PRELOAD) can interpose its pwritev2; vmtool is a static Go
 * program and cannot be preloaded.
 *
 *   tearw FILE SLOT SLOTS FIRST WRITERS group|plain PREFIX
 *
 * WRITERS threads rewrite the SLOT-byte slots FIRST..FIRST+SLOTS-1 of FILE,
 * opened buffered (no O_DIRECT), each write gathered from four buffers:
 *   group  pwritev2(fd, iov, 4, off, RWF_ATOMIC): a buffered atomic write
 *          group, which the shim carries out as one RWF_ATOMIC direct write;
 *          any error ends the program (exit 2)
 *   plain  pwritev2(fd, iov, 4, off, 0): into the page cache, written back
 *          by the kernel in whatever pieces the queue takes
 * Every 512-byte sector carries the record vmtool tear-write writes (magic,
 * sequence, slot, sector, pattern), so `vmtool tear-check` classifies the
 * slots after a reset. Writer w owns the slots with slot % WRITERS == w. Every
 * 100 ms it prints each writer's last completed write, "PREFIX-ack writer=W
 * slot=S seq=Q"; it runs until the machine is reset (the caller does that).
 * Under the shim it also asks for the shim's counters once a second
 * (untorn_stats_dump, looked up, not linked), so that they can be read while
 * it runs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef RWF_ATOMIC
#define RWF_ATOMIC 0x00000040
#endif

#define SECTOR 512
#define MAGIC 0x4c534e524f544e55ULL /* "UNTORNSL", as vmtool's slotMagic */

static const char *path, *prefix;
static long slot_size, slots, first, writers;
static int fd, flags;
static uint64_t seq;

struct ack {
	uint64_t seq, slot; /* written under lock, read by the printer */
	pthread_mutex_t mu;
};
static struct ack *acks;

static void put64(unsigned char *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
}
static void put32(unsigned char *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[i] = (unsigned char)(v >> (8 * i));
}

static void fill(unsigned char *buf, uint64_t s, long slot)
{
	for (long k = 0; k < slot_size / SECTOR; k++) {
		unsigned char *b = buf + k * SECTOR;
		put64(b, MAGIC);
		put64(b + 8, s);
		put32(b + 16, (uint32_t)slot);
		put32(b + 20, (uint32_t)k);
		for (int i = 24; i < SECTOR; i++)
			b[i] = (unsigned char)s ^ (unsigned char)i;
	}
}

static void *writer(void *arg)
{
	long w = (long)arg;
	unsigned char *buf = malloc(slot_size);
	if (!buf) {
		fprintf(stderr, "tearw: out of memory\n");
		exit(2);
	}
	/* Four buffers of unequal size: a real group, not one iovec. */
	long q = slot_size / 4;
	struct iovec iov[4] = {
		{buf, q / 2}, {buf + q / 2, q + q / 2}, {buf + 2 * q, q}, {buf + 3 * q, q},
	};
	for (long slot = first + w;; slot += writers) {
		if (slot >= first + slots)
			slot = first + w;
		uint64_t s = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
		fill(buf, s, slot);
		ssize_t n = pwritev2(fd, iov, 4, (off_t)slot * slot_size, flags);
		if (n != slot_size) {
			fprintf(stderr, "tearw: %s slot %ld: %s\n", path, slot,
				n < 0 ? strerror(errno) : "short write");
			exit(2);
		}
		pthread_mutex_lock(&acks[w].mu);
		acks[w].seq = s;
		acks[w].slot = (uint64_t)slot;
		pthread_mutex_unlock(&acks[w].mu);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: tearw FILE SLOT SLOTS FIRST WRITERS group|plain PREFIX\n");
		return 2;
	}
	path = argv[1];
	slot_size = atol(argv[2]);
	slots = atol(argv[3]);
	first = atol(argv[4]);
	writers = atol(argv[5]);
	prefix = argv[7];
	if (strcmp(argv[6], "group") == 0)
		flags = RWF_ATOMIC;
	else if (strcmp(argv[6], "plain") == 0)
		flags = 0;
	else {
		fprintf(stderr, "tearw: mode must be group or plain, not %s\n", argv[6]);
		return 2;
	}
	if (slot_size < 4 * SECTOR || slot_size % (4 * SECTOR) != 0 || slots < 1 || first < 0 ||
	    writers < 1 || writers > slots) {
		fprintf(stderr, "tearw: bad geometry: slot %ld slots %ld first %ld writers %ld\n",
			slot_size, slots, first, writers);
		return 2;
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "tearw: open %s: %s\n", path, strerror(errno));
		return 2;
	}
	acks = calloc((size_t)writers, sizeof(*acks));
	if (!acks)
		return 2;
	for (long w = 0; w < writers; w++) {
		pthread_t t;
		pthread_mutex_init(&acks[w].mu, NULL);
		if (pthread_create(&t, NULL, writer, (void *)w) != 0) {
			fprintf(stderr, "tearw: cannot start writer %ld\n", w);
			return 2;
		}
	}
	void (*dump)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "untorn_stats_dump");
	for (long tick = 1;; tick++) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (dump && tick % 10 == 0)
			dump();
		for (long w = 0; w < writers; w++) {
			pthread_mutex_lock(&acks[w].mu);
			uint64_t s = acks[w].seq, sl = acks[w].slot;
			pthread_mutex_unlock(&acks[w].mu);
			if (s)
				printf("%s-ack writer=%ld slot=%llu seq=%llu\n", prefix, w,
				       (unsigned long long)sl, (unsigned long long)s);
		}
		fflush(stdout);
	}
}
