/* Internal interfaces of the untorn preload library (libuntorn.so). */
#ifndef UNTORN_H
#define UNTORN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Kernel ABI values that Debian bookworm's headers predate. */
#ifndef RWF_ATOMIC
#define RWF_ATOMIC 0x00000040
#endif
#ifndef RWF_HIPRI
#define RWF_HIPRI 0x00000001
#define RWF_DSYNC 0x00000002
#define RWF_SYNC 0x00000004
#endif
#ifndef RWF_APPEND
#define RWF_APPEND 0x00000010
#endif
#define UT_STATX_WRITE_ATOMIC 0x00010000U
#define UT_STATX_ATTR_WRITE_ATOMIC 0x00400000ULL

/* Descriptors at or above this number are never tracked (passed through). */
#define UT_TABLE_SIZE 65536

enum ut_mode { UT_MODE_OFF, UT_MODE_ON, UT_MODE_STRICT, UT_MODE_DIRECT_BENCH };

/* Why a write was passed through unchanged; indexes ut_stats.pass. */
enum ut_reason {
	UT_R_OFF,          /* UNTORN_MODE=off */
	UT_R_UNALIGNED,    /* offset or length not a multiple of the unit */
	UT_R_NOT_REGULAR,  /* pipe, socket, device, ... */
	UT_R_NOT_ATOMIC,   /* the filesystem reports no atomic writes */
	UT_R_UNIT_RANGE,   /* the unit is outside the filesystem's [min,max] */
	UT_R_APPEND,       /* O_APPEND descriptor or RWF_APPEND */
	UT_R_EXCLUDED,     /* path filter */
	UT_R_NOT_WRITABLE, /* descriptor opened read-only */
	UT_R_FD_RANGE,     /* descriptor number >= UT_TABLE_SIZE */
	UT_R_APP_FLAGS,    /* caller's own RWF flags we do not combine with */
	UT_R_ERROR,        /* companion could not be opened or write rejected */
	UT_R_SEGMENTS,     /* aio/uring write with more than one segment */
	UT_R_UNSPLITTABLE, /* aio/uring write longer than one atomic write */
	UT_R_BUFFERED_ASYNC, /* aio/uring write on a buffered descriptor */
	UT_R_FIXED_FILE,   /* io_uring registered file: descriptor unknown */
	UT_R_UNKNOWN_FD,   /* fd state changed under us (closed concurrently) */
	UT_R_NESTED,       /* a signal handler's write inside the library's own call */
	UT_R_URING_LAYOUT, /* the running liburing's ring layout is not the known one */
	UT_R_COUNT
};

/* Why a buffered atomic write group (the caller's RWF_ATOMIC) was refused;
 * indexes ut_stats.group_refused. */
enum ut_group_refusal {
	UT_G_NOT_ATOMIC, /* EOPNOTSUPP: no atomic writes for this file (fs, type, mode) */
	UT_G_LENGTH,     /* EINVAL: length not a power of two or outside [min,max] */
	UT_G_ALIGNMENT,  /* EINVAL: offset not aligned to the length */
	UT_G_SEGMENTS,   /* EINVAL: more buffers than IOV_MAX */
	UT_G_FLAGS,      /* flags other than DSYNC/SYNC/HIPRI: the kernel answers */
	UT_G_ERROR,      /* the atomic write itself failed (errno passed on) */
	UT_G_COUNT
};

struct ut_stats {
	uint64_t atomic_writes;   /* write calls made untorn (all paths) */
	uint64_t atomic_bytes;
	uint64_t atomic_syscalls; /* pwritev2(RWF_ATOMIC) pieces issued */
	uint64_t split_writes;    /* calls split into more than one piece */
	uint64_t buffered_atomic; /* pieces written with kernel buffered RWF_ATOMIC */
	uint64_t direct_fd_atomic;/* pieces written on an O_DIRECT caller fd */
	uint64_t companion_opens;
	uint64_t aio_atomic;      /* libaio iocbs given RWF_ATOMIC */
	uint64_t uring_atomic;    /* io_uring SQEs given RWF_ATOMIC */
	uint64_t uring_submits;   /* liburing submit calls seen */
	uint64_t aio_submits;     /* io_submit calls seen */
	uint64_t direct_unsafe;   /* unsafe-direct-bench writes (no RWF_ATOMIC) */
	uint64_t strict_failures; /* writes failed with EIO in strict mode */
	uint64_t write_errors;    /* atomic writes that returned an error */
	uint64_t writethrough_ns; /* time spent in the writethrough's write system calls */
	uint64_t group_asked;     /* pwritev2(RWF_ATOMIC) calls on buffered descriptors */
	uint64_t group_done;      /* ... written by the library as one atomic write */
	uint64_t group_kernel;    /* ... handed to a kernel that takes buffered RWF_ATOMIC */
	uint64_t group_refused[UT_G_COUNT];
	uint64_t pass[UT_R_COUNT];
};

struct ut_fd {
	uint32_t state;  /* UT_FD_* (atomic access) */
	uint32_t reason; /* for UT_FD_NO */
	uint32_t users;  /* writers inside the companion (atomic) */
	int32_t companion1; /* companion descriptor + 1; 0: not opened yet */
	int32_t owner;     /* > 0: this number is the companion of fd owner-1 */
	uint32_t unit;
	uint32_t unit_max; /* the filesystem's atomic unit max */
	uint32_t unit_min; /* the filesystem's atomic unit min */
	uint32_t max_opt;  /* the filesystem's fast atomic limit (0: none reported) */
	uint32_t group_ok; /* buffered atomic write groups possible (fs atomic, writable) */
	uint32_t direct; /* caller's descriptor is O_DIRECT */
	uint32_t mem_align;
	uint64_t dev, ino;
};

/* UT_FD_BUSY: one thread is classifying the number (no lock is held). */
enum { UT_FD_UNKNOWN = 0, UT_FD_NO = 1, UT_FD_YES = 2, UT_FD_BUSY = 3 };

struct ut_config {
	int mode;
	uint32_t unit;      /* 0: the filesystem's unit min */
	uint64_t pass_mask; /* a write whose offset or length has one of these bits passes */
	int hardware;       /* -1 unknown, 0, 1 (UNTORN_HARDWARE) */
	char stats_dir[512];
	char include[1024];
	char exclude[1024];
};

/* The last atomic filesystem seen (statx), for the counters. */
struct ut_fsinfo {
	uint32_t unit_min, unit_max, unit_max_opt, segments_max;
};

extern struct ut_config ut_cfg;
extern struct ut_fsinfo ut_fsi;
extern struct ut_stats ut_st;
extern struct ut_fd ut_fds[UT_TABLE_SIZE];
extern int ut_buffered_atomic; /* -1 unknown, 0 no, 1 kernel accepts it */

#define UT_INC(field) __atomic_fetch_add(&ut_st.field, 1, __ATOMIC_RELAXED)
#define UT_ADD(field, n) __atomic_fetch_add(&ut_st.field, (n), __ATOMIC_RELAXED)

/* Pass-through counters are per thread (no shared cache line, no locked
 * instruction on the pass-through path) and summed when written out. */
struct ut_tcount {
	uint64_t pass[UT_R_COUNT];
	uint32_t in_use;
	struct ut_tcount *next;
};
extern __thread struct ut_tcount *ut_tc __attribute__((tls_model("initial-exec")));
struct ut_tcount *ut_tc_new(void);
static inline void ut_pass(int r)
{
	struct ut_tcount *c = ut_tc;
	if (__builtin_expect(c == NULL, 0) && (c = ut_tc_new()) == NULL) {
		__atomic_fetch_add(&ut_st.pass[r], 1, __ATOMIC_RELAXED);
		return;
	}
	__atomic_store_n(&c->pass[r], c->pass[r] + 1, __ATOMIC_RELAXED);
}
#define UT_PASS(r) ut_pass(r)

/* Real functions, resolved with dlsym(RTLD_NEXT). */
struct ut_real {
	ssize_t (*pwrite)(int, const void *, size_t, off_t);
	ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
	ssize_t (*pwritev2)(int, const struct iovec *, int, off_t, int);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*writev)(int, const struct iovec *, int);
	int (*close)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*close_range)(unsigned, unsigned, int);
	void (*closefrom)(int);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
	int (*io_submit)(void *, long, void **);
	int (*uring_submit)(void *);
	int (*uring_submit_and_wait)(void *, unsigned);
	int (*uring_submit_and_wait_timeout)(void *, void **, unsigned, void *, void *);
	int (*uring_submit_and_get_events)(void *);
	int (*open)(const char *, int, ...);
	int (*open64)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*openat64)(int, const char *, int, ...);
	int (*open_2)(const char *, int);
	int (*open64_2)(const char *, int);
	int (*openat_2)(int, const char *, int);
	int (*openat64_2)(int, const char *, int);
	int (*creat)(const char *, mode_t);
	int (*creat64)(const char *, mode_t);
	int (*dup)(int);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int uring_layout_ok; /* the running liburing's ring layout is the known one */
};
extern struct ut_real ut_real;
void ut_resolve(void);
void ut_real_fallbacks(void); /* intercept.c */

/* ut_inited: 0 not yet, 1 being initialised, 2 ready. */
extern int ut_inited;
/* Depth of the library's own calls on this thread: a write that arrives
 * while it is > 0 comes from a signal handler (or a function the library
 * called) and is passed through without touching any shared state. */
extern __thread int ut_depth __attribute__((tls_model("initial-exec")));

/* core.c */
void ut_init(void);
/* Ready for work: initialised and not off. A call made while this thread is
 * initialising the library passes through. */
static inline int ut_ready(void)
{
	if (__builtin_expect(__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) != 2, 0)) {
		ut_init();
		if (__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) != 2)
			return 0;
	}
	return ut_cfg.mode != UT_MODE_OFF;
}
/* group: also return a descriptor that does not qualify for unaware page
 * writes but can take buffered atomic write groups (e->group_ok). */
struct ut_fd *ut_lookup(int fd, int *reason, int group);
int ut_companion(int fd, struct ut_fd *e);
ssize_t ut_write_piece(int target, const struct iovec *iov, int cnt, size_t skip, size_t len,
		       off_t off, int flags, size_t align);
int ut_group_write(int fd, const struct iovec *iov, int cnt, off_t off, int flags, ssize_t *res);
ssize_t ut_write_at(int fd, struct ut_fd *e, const struct iovec *iov, int cnt,
		    size_t len, off_t off, int flags);
void ut_release(struct ut_fd *e);
int ut_unit_ok(const struct ut_fd *e, size_t len, off_t off);
void ut_forget(int fd);
void ut_forget_range(unsigned first, unsigned last);
void ut_after_fork_child(void);

/* stats.c */
void ut_stats_dump(const char *why);
void ut_stats_maybe_dump(void);
void ut_stats_reset(void);
const char *ut_reason_name(int r);

#endif
