package atomic

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// BufferedFile is a file opened for ordinary buffered I/O that also takes
// atomic write groups: WriteGroupAt gathers its buffers and writes them as
// one RWF_ATOMIC write that lands whole or not at all, while reads, plain
// writes and mmap go through the page cache as usual and see the group as
// soon as the call returns. It is the Go form of what libuntorn.so gives a
// C program's pwritev2(..., RWF_ATOMIC) on a buffered descriptor: where the
// kernel takes buffered RWF_ATOMIC itself the group is written on the
// buffered descriptor, else through an O_DIRECT companion descriptor of the
// same file (writethrough; the kernel drops the range's cached pages).
type BufferedFile struct {
	f      *os.File
	limits FileLimits

	mu     sync.Mutex
	direct *os.File // the O_DIRECT companion, opened on first need
	kernel int      // -1 unknown, 0 no, 1 the kernel takes buffered RWF_ATOMIC
}

// OpenBuffered opens name (flag must allow writing) for buffered I/O with
// atomic write groups. A file whose filesystem gives no atomic writes is an
// error wrapping ErrUnsupported; errors are *os.PathError.
func OpenBuffered(name string, flag int, perm os.FileMode) (*BufferedFile, error) {
	if flag&(os.O_WRONLY|os.O_RDWR) == 0 || flag&(unix.O_DIRECT|os.O_APPEND) != 0 {
		return nil, &os.PathError{Op: "open", Path: name,
			Err: fmt.Errorf("%w: a buffered atomic file needs a writable, non-O_DIRECT, non-O_APPEND flag", ErrBadWrite)}
	}
	f, err := os.OpenFile(name, flag|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	l, err := StatFd(int(f.Fd()), name)
	if err == nil && !l.Supported {
		err = &os.PathError{Op: "open", Path: name,
			Err: fmt.Errorf("%w: statx reports no atomic writes (STATX_ATTR_WRITE_ATOMIC unset)", ErrUnsupported)}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &BufferedFile{f: f, limits: l, kernel: -1}, nil
}

// Limits returns the file's statx limits: a group is a power of two within
// [UnitMin, UnitMax] bytes at an offset that is a multiple of its length, in
// any number of buffers (they are gathered first).
func (f *BufferedFile) Limits() FileLimits { return f.limits }

// WriteGroupAt writes the concatenation of bufs at off as one atomic write.
// A group that breaks the rules is refused before anything is written
// (ErrBadWrite); EINVAL and EOPNOTSUPP from the kernel wrap ErrUnsupported
// and mean nothing was written. Durability is that of a write(2): the group
// is on disk whole or not at all after a crash once Sync returns (or at
// once with WriteGroupAtSync); before that it may be lost whole, never torn.
func (f *BufferedFile) WriteGroupAt(bufs [][]byte, off int64) (int, error) {
	return f.writeGroup(bufs, off, 0)
}

// WriteGroupAtSync is WriteGroupAt with RWF_DSYNC: durable when it returns.
func (f *BufferedFile) WriteGroupAtSync(bufs [][]byte, off int64) (int, error) {
	return f.writeGroup(bufs, off, unix.RWF_DSYNC)
}

func (f *BufferedFile) writeGroup(bufs [][]byte, off int64, flags int) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	if err := checkWrite(f.limits, n, off); err != nil {
		return 0, &os.PathError{Op: "pwritev2", Path: f.f.Name(), Err: err}
	}
	buf := alignedBuffer(n, int(max(f.limits.DioMemAlign, 512)))
	at := 0
	for _, b := range bufs {
		at += copy(buf[at:], b)
	}
	fd, err := f.target(buf, off, flags)
	if err != nil {
		return 0, err
	}
	if fd < 0 {
		return n, nil // the kernel took the group on the buffered descriptor
	}
	w, err := pwriteAtomicFlags(fd, buf, off, flags)
	if err != nil {
		return w, &os.PathError{Op: "pwritev2", Path: f.f.Name(), Err: err}
	}
	if w != n {
		return w, io.ErrShortWrite
	}
	return n, nil
}

// target returns the descriptor to write buf on. While it does not know
// whether the kernel takes buffered RWF_ATOMIC, it tries buf on the buffered
// descriptor itself: then it returns -1 (done) or the write's error.
func (f *BufferedFile) target(buf []byte, off int64, flags int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kernel == -1 {
		_, err := pwriteAtomicFlags(int(f.f.Fd()), buf, off, flags)
		if err == nil {
			f.kernel = 1
			return -1, nil
		}
		if !errors.Is(err, ErrUnsupported) {
			return -1, &os.PathError{Op: "pwritev2", Path: f.f.Name(), Err: err}
		}
		f.kernel = 0
	}
	if f.kernel == 1 {
		return int(f.f.Fd()), nil
	}
	if f.direct == nil {
		d, err := openCompanion(f.f)
		if err != nil {
			return -1, err
		}
		f.direct = d
	}
	return int(f.direct.Fd()), nil
}

// openCompanion opens the file behind f again with O_DIRECT (through
// /proc/self/fd, so a rename does not matter) and checks it is the same file.
func openCompanion(f *os.File) (*os.File, error) {
	d, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: f.Name(), Err: fmt.Errorf("O_DIRECT companion: %w", err)}
	}
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Fstat(int(d.Fd()), &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		d.Close()
		return nil, &os.PathError{Op: "open", Path: f.Name(), Err: errors.New("O_DIRECT companion is another file")}
	}
	return d, nil
}

// pwriteAtomicFlags is pwritev2(fd, [buf], off, RWF_ATOMIC|flags), retried
// on EINTR.
func pwriteAtomicFlags(fd int, buf []byte, off int64, flags int) (int, error) {
	for {
		n, err := unix.Pwritev2(fd, [][]byte{buf}, off, unix.RWF_ATOMIC|flags)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, classify(err)
		}
		return n, nil
	}
}

// WriteAt is an ordinary buffered write (no atomicity).
func (f *BufferedFile) WriteAt(b []byte, off int64) (int, error) { return f.f.WriteAt(b, off) }

// ReadAt reads through the page cache.
func (f *BufferedFile) ReadAt(b []byte, off int64) (int, error) { return f.f.ReadAt(b, off) }

// Sync flushes the file (fsync).
func (f *BufferedFile) Sync() error { return f.f.Sync() }

// File is the buffered *os.File (for mmap, Stat, Truncate ...); closing it
// is the BufferedFile's job.
func (f *BufferedFile) File() *os.File { return f.f }

// Name is the name the file was opened with.
func (f *BufferedFile) Name() string { return f.f.Name() }

// Close closes the companion and the file.
func (f *BufferedFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.direct != nil {
		f.direct.Close()
		f.direct = nil
	}
	return f.f.Close()
}
