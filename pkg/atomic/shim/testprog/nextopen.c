/*
 * A preload library loaded after libuntorn (LD_PRELOAD=libuntorn.so:
 * libnextopen.so), as libeatmydata would be: it counts the descriptor calls
 * that reach it. libuntorn must call the next definition, not the system
 * call, or this library (and libc's cancellation points) never see them.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/types.h>

static long counts[5]; /* open, openat, creat, dup, fcntl */

__attribute__((visibility("default"))) long *nextopen_counts(void) { return counts; }

int open(const char *p, int f, ...)
{
	va_list ap;
	va_start(ap, f);
	unsigned m = va_arg(ap, unsigned);
	va_end(ap);
	counts[0]++;
	return ((int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open"))(p, f, m);
}

int openat(int d, const char *p, int f, ...)
{
	va_list ap;
	va_start(ap, f);
	unsigned m = va_arg(ap, unsigned);
	va_end(ap);
	counts[1]++;
	return ((int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat"))(d, p, f, m);
}

int creat(const char *p, mode_t m)
{
	counts[2]++;
	return ((int (*)(const char *, mode_t))dlsym(RTLD_NEXT, "creat"))(p, m);
}

int dup(int fd)
{
	counts[3]++;
	return ((int (*)(int))dlsym(RTLD_NEXT, "dup"))(fd);
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	unsigned long a = va_arg(ap, unsigned long);
	va_end(ap);
	counts[4]++;
	return ((int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl"))(fd, cmd, a);
}
