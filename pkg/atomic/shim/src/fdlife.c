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
	if (__builtin_expect(ut_real.write == NULL, 0))
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
	return fresh((int)syscall(SYS_dup, old));
}

UT_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	ready();
	int r = ut_real.close_range ? ut_real.close_range(first, last, flags)
				    : (int)syscall(SYS_close_range, first, last, flags);
	/* CLOSE_RANGE_CLOEXEC (4) closes nothing now; companions are O_CLOEXEC. */
	if (r == 0 && !(flags & 4))
		ut_forget_range(first, last);
	return r;
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

static int do_fcntl(int fd, int cmd, unsigned long arg)
{
	ready();
	long r = syscall(SYS_fcntl, fd, cmd, arg);
	if (r < 0)
		return (int)r;
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		fresh((int)r);
	else if (cmd == F_SETFL)
		ut_forget(fd);
	return (int)r;
}

UT_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	unsigned long arg = va_arg(ap, unsigned long);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

UT_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	unsigned long arg = va_arg(ap, unsigned long);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

static int do_openat(int dirfd, const char *path, int flags, unsigned mode)
{
	ready();
	return fresh((int)syscall(SYS_openat, dirfd, path, flags, mode));
}

static unsigned mode_arg(int flags, va_list ap)
{
	if (flags & (O_CREAT | O_TMPFILE))
		return va_arg(ap, unsigned);
	return 0;
}

#define UT_OPEN(name)                                                                   \
	UT_EXPORT int name(const char *path, int flags, ...)                            \
	{                                                                               \
		va_list ap;                                                             \
		va_start(ap, flags);                                                    \
		unsigned m = mode_arg(flags, ap);                                       \
		va_end(ap);                                                             \
		return do_openat(AT_FDCWD, path, flags, m);                             \
	}
#define UT_OPENAT(name)                                                                 \
	UT_EXPORT int name(int dirfd, const char *path, int flags, ...)                 \
	{                                                                               \
		va_list ap;                                                             \
		va_start(ap, flags);                                                    \
		unsigned m = mode_arg(flags, ap);                                       \
		va_end(ap);                                                             \
		return do_openat(dirfd, path, flags, m);                                \
	}

UT_OPEN(open)
UT_OPEN(open64)
UT_OPENAT(openat)
UT_OPENAT(openat64)

UT_EXPORT int __open_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
UT_EXPORT int __open64_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
UT_EXPORT int __openat_2(int d, const char *path, int flags) { return do_openat(d, path, flags, 0); }
UT_EXPORT int __openat64_2(int d, const char *path, int flags) { return do_openat(d, path, flags, 0); }

UT_EXPORT int creat(const char *path, mode_t mode)
{
	return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
UT_EXPORT int creat64(const char *path, mode_t mode)
{
	return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

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
