package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// freeBytes is the space unprivileged writers may still use in dir's filesystem.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// allocatedBytes is what a sparse file occupies on disk. A symlink is not
// followed: what it points to is not the backend's.
func allocatedBytes(p string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return 0, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	return st.Blocks * 512, nil
}

// fileIdentity names one inode for as long as it exists: its filesystem,
// inode number and birth time (0 where the filesystem keeps none). The loop
// backend records the identity of every image it creates and acts on a file
// at the image's path only when it still has that identity.
type fileIdentity struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Birth int64  `json:"birthNs,omitempty"`
}

func identityOf(f *os.File) (fileIdentity, error) {
	var stx unix.Statx_t
	err := ignoringEINTR(func() error {
		return unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_INO|unix.STATX_BTIME, &stx)
	})
	if err != nil {
		return fileIdentity{}, &os.PathError{Op: "statx", Path: f.Name(), Err: err}
	}
	id := fileIdentity{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}
	if stx.Mask&unix.STATX_BTIME != 0 {
		id.Birth = stx.Btime.Sec*1e9 + int64(stx.Btime.Nsec)
	}
	return id, nil
}

// same reports whether two identities name the same inode. A birth time
// missing on either side is not compared (a record from before birth
// times were kept, or a filesystem without them).
func (a fileIdentity) same(b fileIdentity) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && (a.Birth == 0 || b.Birth == 0 || a.Birth == b.Birth)
}

// openNoFollow opens p without following a symlink at p and without
// blocking on a FIFO.
func openNoFollow(p string, flag int) (*os.File, error) {
	return os.OpenFile(p, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}

// newUnlinkedFile creates a file with no name yet in dir (O_TMPFILE), so
// that no path ever shows a half-made image; linkInto gives it its name.
// Where the filesystem has no O_TMPFILE it falls back to a new, exclusive
// temporary name in dir, which linkInto removes.
func newUnlinkedFile(dir, pattern string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, pattern)), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.CreateTemp(dir, pattern+".tmp-*")
}

// linkInto gives f (from newUnlinkedFile) the name dst. It never replaces
// anything at dst: when dst exists it fails with an error that wraps
// os.ErrExist.
func linkInto(f *os.File, dst string) error {
	if _, err := os.Lstat(f.Name()); err == nil {
		// The fallback: f has a temporary name.
		err := os.Link(f.Name(), dst)
		os.Remove(f.Name())
		return err
	}
	err := unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd does not.
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: err}
	}
	return nil
}

// syncDir makes a directory's entries (a new or renamed file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
