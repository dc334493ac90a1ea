package driver

import (
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
