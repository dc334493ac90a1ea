package driver

import "golang.org/x/sys/unix"

// deviceNumber is the device number of the block device at path (0 when
// it cannot be read); it tells a device replaced under the same path.
func deviceNumber(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Rdev
}
