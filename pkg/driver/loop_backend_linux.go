package driver

import (
	"os"

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

// allocatedBytes is what a sparse file occupies on disk.
func allocatedBytes(p string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return st.Blocks * 512, nil
}
