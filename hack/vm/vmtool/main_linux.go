package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const usage = `usage:
  vmtool statx PATH [--json]
  vmtool write PATH SIZE@OFFSET...
  vmtool tear-write DEVICE --slot BYTES --slots N [--first SLOT] --writers N --reset-after DURATION [--plain] [--prefix P]
  vmtool tear-check DEVICE --slot BYTES --slots N [--first SLOT] [--prefix P]
  vmtool mbr DEVICE START:SIZE...        (512-byte sectors)
  vmtool jget KEY... < JSON
  vmtool jsum KEY < JSON-LINES
  vmtool csi SOCKET [--unit SIZE] [--size BYTES] [--expand-to BYTES]
  vmtool csi-place SOCKET [--name N] [--size BYTES] [--param KEY=VALUE]...
  vmtool csi-delete SOCKET VOLUME_ID`

func main() {
	if len(os.Args) < 3 && !(len(os.Args) == 2 && os.Args[1] == "jget") {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "statx":
		err = cmdStatx(os.Args[2], len(os.Args) > 3 && os.Args[3] == "--json")
	case "write":
		err = cmdWrite(os.Args[2], os.Args[3:])
	case "tear-write":
		err = cmdTearWrite(os.Args[2], os.Args[3:])
	case "mbr":
		err = cmdMBR(os.Args[2], os.Args[3:])
	case "csi":
		err = cmdCSI(os.Args[2], os.Args[3:])
	case "csi-place":
		err = cmdPlace(os.Args[2], os.Args[3:])
	case "csi-delete":
		err = cmdDelete(os.Args[2], os.Args[3:])
	case "jsum":
		err = cmdJSum(os.Args[2])
	case "jget":
		err = cmdJGet(os.Args[2:])
	case "tear-check":
		err = cmdTearCheck(os.Args[2], os.Args[3:])
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtool:", err)
		os.Exit(2)
	}
}

// statxResult is the atomic-write part of statx, as the kernel reports it.
type statxResult struct {
	Supported   bool   `json:"supported"`
	UnitMin     uint32 `json:"unitMin"`
	UnitMax     uint32 `json:"unitMax"`
	UnitMaxOpt  uint32 `json:"unitMaxOpt"`
	SegmentsMax uint32 `json:"segmentsMax"`
}

func statx(path string) (statxResult, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_WRITE_ATOMIC|unix.STATX_BASIC_STATS, &st); err != nil {
		return statxResult{}, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	r := statxResult{Supported: st.Attributes_mask&unix.STATX_ATTR_WRITE_ATOMIC != 0 &&
		st.Attributes&unix.STATX_ATTR_WRITE_ATOMIC != 0}
	if st.Mask&unix.STATX_WRITE_ATOMIC != 0 {
		r.UnitMin, r.UnitMax = st.Atomic_write_unit_min, st.Atomic_write_unit_max
		r.UnitMaxOpt, r.SegmentsMax = st.Atomic_write_unit_max_opt, st.Atomic_write_segments_max
	}
	return r, nil
}

func cmdStatx(path string, asJSON bool) error {
	r, err := statx(path)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	fmt.Printf("supported=%v unit_min=%d unit_max=%d segments_max=%d\n", r.Supported, r.UnitMin, r.UnitMax, r.SegmentsMax)
	return nil
}

// cmdWrite does one pwritev2(RWF_ATOMIC) per SIZE@OFFSET on an O_DIRECT
// descriptor and prints "SIZE@OFFSET ok" or "SIZE@OFFSET ERRNO" (EINVAL,
// EOPNOTSUPP...). A regular file is created when missing; the data written
// is read back and compared.
func cmdWrite(path string, specs []string) error {
	flags := unix.O_RDWR | unix.O_DIRECT | unix.O_CLOEXEC
	if !strings.HasPrefix(path, "/dev/") {
		flags |= unix.O_CREAT
	}
	fd, err := unix.Open(path, flags, 0o644)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for _, s := range specs {
		size, off, err := parseSpec(s)
		if err != nil {
			return err
		}
		buf := alignedBuf(size)
		for i := range buf {
			buf[i] = byte(i*31 + int(off/4096) + size)
		}
		_, werr := unix.Pwritev2(fd, [][]byte{buf}, off, unix.RWF_ATOMIC)
		if werr != nil {
			fmt.Printf("%s %s\n", s, errnoName(werr))
			continue
		}
		got := alignedBuf(size)
		if _, err := unix.Pread(fd, got, off); err != nil {
			return &os.PathError{Op: "pread", Path: path, Err: err}
		}
		if string(got) != string(buf) {
			fmt.Printf("%s readback-mismatch\n", s)
			continue
		}
		fmt.Printf("%s ok\n", s)
	}
	return nil
}

func parseSpec(s string) (int, int64, error) {
	a, b, ok := strings.Cut(s, "@")
	size, err1 := strconv.Atoi(a)
	off, err2 := strconv.ParseInt(b, 0, 64)
	if !ok || err1 != nil || err2 != nil || size <= 0 || size > 64<<20 || off < 0 {
		return 0, 0, fmt.Errorf("bad write %q: want SIZE@OFFSET in bytes", s)
	}
	return size, off, nil
}

// alignedBuf returns a page-aligned buffer (O_DIRECT needs aligned memory).
func alignedBuf(n int) []byte {
	b, err := unix.Mmap(-1, 0, (n+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b[:n]
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
	}
	return err.Error()
}
