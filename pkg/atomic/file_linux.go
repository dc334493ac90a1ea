package atomic

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// File is a file opened for atomic writes.
type File struct {
	f      *os.File
	limits FileLimits
}

// OpenFile opens name with O_DIRECT added to flag and checks statx. A file
// whose filesystem gives no atomic writes is an error wrapping
// ErrUnsupported.
func OpenFile(name string, flag int, perm os.FileMode) (*File, error) {
	f, err := os.OpenFile(name, flag|unix.O_DIRECT|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	l, err := StatFd(int(f.Fd()), name)
	if err != nil {
		f.Close()
		return nil, err
	}
	if !l.Supported {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: name,
			Err: fmt.Errorf("%w: statx reports no atomic writes (STATX_ATTR_WRITE_ATOMIC unset)", ErrUnsupported)}
	}
	return &File{f: f, limits: l}, nil
}

// Limits returns the file's statx limits.
func (f *File) Limits() FileLimits { return f.limits }

// WriteAtomicAt writes b at off with RWF_ATOMIC. len(b) must be a power of
// two within [UnitMin, UnitMax] and off a multiple of len(b) (ErrBadWrite);
// an unaligned b is copied into an aligned buffer. The write lands whole or
// not at all: a short write is reported as io.ErrShortWrite. EINVAL and
// EOPNOTSUPP from the kernel wrap ErrUnsupported; errors are
// *os.PathError with Op "pwritev2".
func (f *File) WriteAtomicAt(b []byte, off int64) (int, error) {
	if err := checkWrite(f.limits, len(b), off); err != nil {
		return 0, &os.PathError{Op: "pwritev2", Path: f.f.Name(), Err: err}
	}
	buf := alignedCopy(b, int(max(f.limits.DioMemAlign, 512)))
	n, err := pwriteAtomic(int(f.f.Fd()), buf, off)
	if err != nil {
		return n, &os.PathError{Op: "pwritev2", Path: f.f.Name(), Err: err}
	}
	if n != len(b) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// checkWrite validates an atomic write against the file's limits.
func checkWrite(l FileLimits, n int, off int64) error {
	switch {
	case n == 0 || !isPowerOfTwo(uint64(n)):
		return fmt.Errorf("%w: length %d is not a power of two", ErrBadWrite, n)
	case uint64(n) < uint64(l.UnitMin):
		return fmt.Errorf("%w: length %d is below the atomic write unit min %d", ErrBadWrite, n, l.UnitMin)
	case uint64(n) > uint64(l.UnitMax):
		return fmt.Errorf("%w: length %d is above the atomic write unit max %d", ErrBadWrite, n, l.UnitMax)
	case off < 0 || off%int64(n) != 0:
		return fmt.Errorf("%w: offset %d is not a multiple of the length %d", ErrBadWrite, off, n)
	}
	return nil
}

// pwriteAtomic is pwritev2(fd, [buf], off, RWF_ATOMIC), retried on EINTR.
func pwriteAtomic(fd int, buf []byte, off int64) (int, error) {
	for {
		n, err := unix.Pwritev2(fd, [][]byte{buf}, off, unix.RWF_ATOMIC)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, classify(err)
		}
		return n, nil
	}
}

// preadFull reads len(buf) bytes at off, retrying on EINTR and short reads.
func preadFull(fd int, buf []byte, off int64) error {
	for done := 0; done < len(buf); {
		n, err := unix.Pread(fd, buf[done:], off+int64(done))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		done += n
	}
	return nil
}

// alignedBuffer returns a zeroed n-byte slice whose start is a multiple of
// align (a power of two). Go's heap does not move objects, so the
// alignment holds for the slice's lifetime.
func alignedBuffer(n, align int) []byte {
	raw := make([]byte, n+align)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & uintptr(align-1)); r != 0 {
		shift = align - r
	}
	return raw[shift : shift+n : shift+n]
}

// alignedCopy returns b itself when it is aligned, else an aligned copy.
func alignedCopy(b []byte, align int) []byte {
	if len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))&uintptr(align-1) == 0 {
		return b
	}
	c := alignedBuffer(len(b), align)
	copy(c, b)
	return c
}

// ReadAt, Close, Fd, Name delegate to the os.File. ReadAt goes through the
// O_DIRECT descriptor: b and off must meet the direct I/O alignment.
func (f *File) ReadAt(b []byte, off int64) (int, error) { return f.f.ReadAt(b, off) }
func (f *File) Close() error                            { return f.f.Close() }
func (f *File) Fd() uintptr                             { return f.f.Fd() }
func (f *File) Name() string                            { return f.f.Name() }
