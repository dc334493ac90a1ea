/* Descriptor lifecycle: open, close, dup, fcntl, close_range, exec. */
#include "untorn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UT_EXPORT __attribute__((visibility("default")))

/* musl maps the *64 names to the plain ones with macros. */
#undef open64
#undef openat64
#undef creat64
#undef fcntl64
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef O_TMPFILE
#define O_TMPFILE (020000000 | O_DIRECTORY)
#endif

static inline void ready(void)
{
	if (__builtin_expect(__atomic_load_n(&ut_inited, __ATOMIC_ACQUIRE) != 2, 0))
		ut_init();
}

/* A number handed out by the kernel must not inherit a stale entry. */
static int fresh(int fd)
{
	if (fd >= 0)
		ut_forget(fd);
	return fd;
}

UT_EXPORT int close(int fd)
{
	ready();
	ut_forget(fd);
	return ut_real.close ? ut_real.close(fd) : (int)syscall(SYS_close, fd);
}

UT_EXPORT int dup2(int old, int newfd)
{
	ready();
	if (old != newfd)
		ut_forget(newfd);
	return ut_real.dup2 ? ut_real.dup2(old, newfd) : (int)syscall(SYS_dup2, old, newfd);
}

UT_EXPORT int dup3(int old, int newfd, int flags)
{
	ready();
	if (old != newfd)
		ut_forget(newfd);
	return ut_real.dup3 ? ut_real.dup3(old, newfd, flags)
			    : (int)syscall(SYS_dup3, old, newfd, flags);
}

UT_EXPORT int dup(int old)
{
	ready();
	return fresh(ut_real.dup ? ut_real.dup(old) : (int)syscall(SYS_dup, old));
}

UT_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	ready();
	/* Forget first, as closefrom does: once the numbers are closed another
	 * thread may be handed one of them, and a companion closed after that
	 * would be its file. CLOSE_RANGE_CLOEXEC (4) closes nothing now
	 * (companions are O_CLOEXEC). */
	if (!(flags & 4) && first <= last)
		ut_forget_range(first, last);
	return ut_real.close_range ? ut_real.close_range(first, last, flags)
				   : (int)syscall(SYS_close_range, first, last, flags);
}

UT_EXPORT void closefrom(int lowfd)
{
	ready();
	if (lowfd < 0)
		lowfd = 0;
	ut_forget_range((unsigned)lowfd, ~0U);
	if (ut_real.closefrom)
		ut_real.closefrom(lowfd);
	else
		syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0);
}

static int after_fcntl(int fd, int cmd, int r)
{
	if (r < 0)
		return r;
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		fresh((int)r);
	else if (cmd == F_SETFL)
		ut_forget(fd);
	return (int)r;
}

/* The argument is an int or a pointer: passed on as a word, which both are
 * in the calling convention of every 64-bit Linux ABI. */
#define UT_FCNTL(name, next)                                                            \
	UT_EXPORT int name(int fd, int cmd, ...)                                        \
	{                                                                               \
		va_list ap;                                                             \
		va_start(ap, cmd);                                                      \
		unsigned long arg = va_arg(ap, unsigned long);                          \
		va_end(ap);                                                             \
		ready();                                                                \
		int r = next ? next(fd, cmd, arg) : (int)syscall(SYS_fcntl, fd, cmd, arg); \
		return after_fcntl(fd, cmd, r);                                         \
	}
UT_FCNTL(fcntl, ut_real.fcntl)
UT_FCNTL(fcntl64, (ut_real.fcntl64 ? ut_real.fcntl64 : ut_real.fcntl))

/* The open family calls the next definition of the same name (libc's, which
 * is a cancellation point, or a later preload library's); the raw system
 * call only while the library is resolving its symbols. */
static int opened(int fd)
{
	return fresh(fd);
}

static int raw_openat(int dirfd, const char *path, int flags, unsigned mode)
{
	return (int)syscall(SYS_openat, dirfd, path, flags, mode);
}

static unsigned mode_arg(int flags, va_list ap)
{
	if (flags & (O_CREAT | O_TMPFILE))
		return va_arg(ap, unsigned);
	return 0;
}

/* One body for every entry point: the next definition, else the plain
 * variant's, else the raw system call. ARGS is the parenthesised argument
 * list both take; RAW the system call that stands in for them. */
#define UT_OPEN_BODY(next, alt, ARGS, RAW)                                              \
	do {                                                                            \
		ready();                                                                \
		if (next)                                                               \
			return opened(next ARGS);                                       \
		if (alt)                                                                \
			return opened(alt ARGS);                                        \
		return opened(RAW);                                                     \
	} while (0)

#define UT_OPEN(name, next, alt)                                                        \
	UT_EXPORT int name(const char *path, int flags, ...)                            \
	{                                                                               \
		va_list ap;                                                             \
		va_start(ap, flags);                                                    \
		unsigned m = mode_arg(flags, ap);                                       \
		va_end(ap);                                                             \
		UT_OPEN_BODY(next, alt, (path, flags, m), raw_openat(AT_FDCWD, path, flags, m)); \
	}
#define UT_OPENAT(name, next, alt)                                                      \
	UT_EXPORT int name(int dirfd, const char *path, int flags, ...)                 \
	{                                                                               \
		va_list ap;                                                             \
		va_start(ap, flags);                                                    \
		unsigned m = mode_arg(flags, ap);                                       \
		va_end(ap);                                                             \
		UT_OPEN_BODY(next, alt, (dirfd, path, flags, m), raw_openat(dirfd, path, flags, m)); \
	}

UT_OPEN(open, ut_real.open, ut_real.open)
UT_OPEN(open64, ut_real.open64, ut_real.open)
UT_OPENAT(openat, ut_real.openat, ut_real.openat)
UT_OPENAT(openat64, ut_real.openat64, ut_real.openat)

/* The fortified entry points (no mode argument), and creat. */
#define UT_OPEN2(name, next, alt)                                                       \
	UT_EXPORT int name(const char *path, int flags)                                 \
	{                                                                               \
		UT_OPEN_BODY(next, alt, (path, flags), raw_openat(AT_FDCWD, path, flags, 0)); \
	}
#define UT_OPENAT2(name, next, alt)                                                     \
	UT_EXPORT int name(int d, const char *path, int flags)                          \
	{                                                                               \
		UT_OPEN_BODY(next, alt, (d, path, flags), raw_openat(d, path, flags, 0)); \
	}
#define UT_CREAT(name, next, alt)                                                       \
	UT_EXPORT int name(const char *path, mode_t mode)                               \
	{                                                                               \
		UT_OPEN_BODY(next, alt, (path, mode),                                   \
			     raw_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode)); \
	}
UT_OPEN2(__open_2, ut_real.open_2, ut_real.open)
UT_OPEN2(__open64_2, ut_real.open64_2, ut_real.open)
UT_OPENAT2(__openat_2, ut_real.openat_2, ut_real.openat)
UT_OPENAT2(__openat64_2, ut_real.openat64_2, ut_real.openat)
UT_CREAT(creat, ut_real.creat, ut_real.creat)
UT_CREAT(creat64, ut_real.creat64, ut_real.creat)

/* exec replaces the image: companions go with O_CLOEXEC; counters are saved. */
UT_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	ready();
	ut_stats_dump("exec");
	if (ut_real.execve)
		return ut_real.execve(path, argv, envp);
	return (int)syscall(SYS_execve, path, argv, envp);
}

extern char **environ;

UT_EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

UT_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	ready();
	ut_stats_dump("exec");
	if (!ut_real.execvpe) {
		errno = ENOSYS;
		return -1;
	}
	return ut_real.execvpe(file, argv, envp);
}

UT_EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

UT_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	ready();
	ut_stats_dump("exec");
	if (!ut_real.fexecve) {
		errno = ENOSYS;
		return -1;
	}
	return ut_real.fexecve(fd, argv, envp);
}
