package atomic

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// FileLimits is what statx(STATX_WRITE_ATOMIC) reports for a file.
type FileLimits struct {
	Supported   bool   `json:"supported"` // STATX_ATTR_WRITE_ATOMIC set
	UnitMin     uint32 `json:"unitMin"`
	UnitMax     uint32 `json:"unitMax"`
	UnitMaxOpt  uint32 `json:"unitMaxOpt"`
	SegmentsMax uint32 `json:"segmentsMax"`
	// DioMemAlign and DioOffsetAlign are the O_DIRECT buffer and offset
	// alignments (STATX_DIOALIGN); 0 when the file has no direct I/O.
	DioMemAlign    uint32 `json:"dioMemAlign,omitempty"`
	DioOffsetAlign uint32 `json:"dioOffsetAlign,omitempty"`
	// DevMajor and DevMinor name the device holding the file's filesystem.
	DevMajor uint32 `json:"-"`
	DevMinor uint32 `json:"-"`
}

const statxMask = unix.STATX_WRITE_ATOMIC | unix.STATX_DIOALIGN

// StatPath calls statx on path. ENOSYS/EINVAL/EOPNOTSUPP wrap
// ErrUnsupported; errors are *os.PathError with Op "statx".
func StatPath(path string) (FileLimits, error) {
	return statx(unix.AT_FDCWD, path, 0, path)
}

// StatFd calls statx on an open descriptor; name is used in errors.
func StatFd(fd int, name string) (FileLimits, error) {
	return statx(fd, "", unix.AT_EMPTY_PATH, name)
}

func statx(dirfd int, path string, flags int, name string) (FileLimits, error) {
	var st unix.Statx_t
	var err error
	for {
		err = unix.Statx(dirfd, path, flags|unix.AT_STATX_SYNC_AS_STAT, statxMask, &st)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return FileLimits{}, &os.PathError{Op: "statx", Path: name, Err: classify(err)}
	}
	return limitsFromStatx(&st), nil
}

func limitsFromStatx(st *unix.Statx_t) FileLimits {
	l := FileLimits{DevMajor: st.Dev_major, DevMinor: st.Dev_minor}
	if st.Mask&unix.STATX_DIOALIGN != 0 {
		l.DioMemAlign = st.Dio_mem_align
		l.DioOffsetAlign = st.Dio_offset_align
	}
	if st.Mask&unix.STATX_WRITE_ATOMIC == 0 {
		return l // a kernel that does not know STATX_WRITE_ATOMIC
	}
	l.Supported = st.Attributes&unix.STATX_ATTR_WRITE_ATOMIC != 0
	l.UnitMin = st.Atomic_write_unit_min
	l.UnitMax = st.Atomic_write_unit_max
	l.UnitMaxOpt = st.Atomic_write_unit_max_opt
	l.SegmentsMax = st.Atomic_write_segments_max
	if l.UnitMin == 0 || l.UnitMax == 0 {
		l.Supported = false
	}
	return l
}
