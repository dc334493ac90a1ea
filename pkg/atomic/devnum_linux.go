package atomic

import (
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// devNumbers returns the device numbers of a device node.
func devNumbers(fi fs.FileInfo) (major, minor uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	rdev := uint64(st.Rdev)
	return unix.Major(rdev), unix.Minor(rdev), true
}
