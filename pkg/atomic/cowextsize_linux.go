package atomic

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsxattr is struct fsxattr of <linux/fs.h>, the argument of
// FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR.
type fsxattr struct {
	xflags     uint32
	extsize    uint32
	nextents   uint32
	projid     uint32
	cowextsize uint32
	pad        [8]byte
}

// fsXflagCoWExtSize is FS_XFLAG_COWEXTSIZE: the inode carries a
// copy-on-write extent size hint, which a directory passes on to the files
// and directories created in it.
const fsXflagCoWExtSize = 0x00010000

// maxCoWExtSize bounds the hints SetCoWExtSize sets: below half the
// smallest allocation group mkfs.xfs makes, the kernel's limit.
const maxCoWExtSize = 1 << 20

// fsxattrIoctl returns FS_IOC_FSGETXATTR (_IOR('X', 31, struct fsxattr))
// or FS_IOC_FSSETXATTR (_IOW('X', 32, struct fsxattr)) in the encoding of
// the running architecture.
func fsxattrIoctl(set bool) uintptr {
	read, write, sizeBits := uintptr(2), uintptr(1), uintptr(14)
	switch runtime.GOARCH {
	case "mips", "mipsle", "mips64", "mips64le", "ppc64", "ppc64le":
		read, write, sizeBits = 2, 4, 13
	}
	dir, nr := read, uintptr(31)
	if set {
		dir, nr = write, 32
	}
	return dir<<(8+8+sizeBits) | unsafe.Sizeof(fsxattr{})<<16 | uintptr('X')<<8 | nr
}

func fsxattrCall(fd int, set bool, a *fsxattr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsxattrIoctl(set), uintptr(unsafe.Pointer(a)))
		if e != syscall.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

// CoWExtSize reads the copy-on-write extent size hint of the root of the
// XFS filesystem mounted at mountRoot: its size in bytes and whether the
// hint is set (when it is not, XFS uses its default of 32 blocks).
func CoWExtSize(mountRoot string) (size uint64, set bool, err error) {
	fd, err := openXFSRoot(mountRoot)
	if err != nil {
		return 0, false, err
	}
	defer unix.Close(fd)
	var a fsxattr
	if err := fsxattrCall(fd, false, &a); err != nil {
		return 0, false, &os.PathError{Op: "FS_IOC_FSGETXATTR", Path: mountRoot, Err: classify(err)}
	}
	return uint64(a.cowextsize), a.xflags&fsXflagCoWExtSize != 0, nil
}

// SetCoWExtSize sets the copy-on-write extent size hint of the root
// directory of the XFS filesystem mounted at mountRoot to size bytes (a
// Plan's CoWExtSize), unless it already is; it reports whether it changed
// anything. Files and directories created afterwards inherit the hint;
// existing ones keep theirs. It is how a volume formatted before the
// planner passed -d cowextsize= gets the hint: the XFS counterpart of
// `xfs_io -c 'cowextsize SIZE' MOUNTROOT`. mountRoot must be the root of
// an XFS mount (ErrUnsupported otherwise); size must be a power of two
// from BlockSize to maxCoWExtSize.
func SetCoWExtSize(mountRoot string, size uint64) (bool, error) {
	if !isPowerOfTwo(size) || size < BlockSize || size > maxCoWExtSize {
		return false, fmt.Errorf("%w: copy-on-write extent size %d is not a power of two from %s to %s",
			ErrNotPowerOfTwo, size, FormatSize(BlockSize), FormatSize(maxCoWExtSize))
	}
	fd, err := openXFSRoot(mountRoot)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var a fsxattr
	if err := fsxattrCall(fd, false, &a); err != nil {
		return false, &os.PathError{Op: "FS_IOC_FSGETXATTR", Path: mountRoot, Err: classify(err)}
	}
	if a.xflags&fsXflagCoWExtSize != 0 && uint64(a.cowextsize) == size {
		return false, nil
	}
	a.xflags |= fsXflagCoWExtSize
	a.cowextsize = uint32(size)
	if err := fsxattrCall(fd, true, &a); err != nil {
		// EINVAL: a filesystem without reflink, or a hint the kernel refuses.
		return false, &os.PathError{Op: "FS_IOC_FSSETXATTR", Path: mountRoot, Err: classify(err)}
	}
	return true, nil
}

// openXFSRoot opens dir, which must be the root directory of a mounted XFS
// filesystem (not a symlink, not a directory inside one).
func openXFSRoot(dir string) (int, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if fs.Type != unix.XFS_SUPER_MAGIC {
		unix.Close(fd)
		return -1, &os.PathError{Op: "open", Path: dir,
			Err: fmt.Errorf("%w: not an xfs filesystem (magic %#x)", ErrUnsupported, fs.Type)}
	}
	var self, parent unix.Stat_t
	if err := unix.Fstat(fd, &self); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := unix.Fstatat(fd, "..", &parent, 0); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "stat", Path: dir + "/..", Err: err}
	}
	if self.Dev == parent.Dev && self.Ino != parent.Ino {
		unix.Close(fd)
		return -1, &os.PathError{Op: "open", Path: dir,
			Err: fmt.Errorf("%w: not the root of a mounted filesystem", ErrUnsupported)}
	}
	return fd, nil
}
