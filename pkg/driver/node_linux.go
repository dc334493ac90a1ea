package driver

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

type fsUsage struct {
	total, free, avail, inodes, inodesFree int64
}

func fsStats(p string) (fsUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fsUsage{}, &os.PathError{Op: "statfs", Path: p, Err: err}
	}
	bs := int64(st.Bsize)
	return fsUsage{
		total:      int64(st.Blocks) * bs,
		free:       int64(st.Bfree) * bs,
		avail:      int64(st.Bavail) * bs,
		inodes:     int64(st.Files),
		inodesFree: int64(st.Ffree),
	}, nil
}

// deviceSize is a block device's size in bytes.
func deviceSize(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// noFollow makes an open fail on a symlink at the leaf.
const noFollow = unix.O_NOFOLLOW

// sameNode reports whether a and b name the same thing: the same block
// device (a device node bound onto a file), or the same inode (a directory
// bound onto another path).
func sameNode(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	if sa.Mode&unix.S_IFMT == unix.S_IFBLK || sb.Mode&unix.S_IFMT == unix.S_IFBLK {
		return sa.Mode&unix.S_IFMT == sb.Mode&unix.S_IFMT && sa.Rdev == sb.Rdev
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// deviceHeadTailZero reports whether the first and the last MiB of a
// device (or image) read as zeros.
func deviceHeadTailZero(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, err
	}
	const span = 1 << 20
	buf := make([]byte, span)
	for _, off := range []int64{0, max(size-span, 0)} {
		n, err := f.ReadAt(buf[:min(span, size)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, &os.PathError{Op: "read", Path: p, Err: err}
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
	}
	return true, nil
}
