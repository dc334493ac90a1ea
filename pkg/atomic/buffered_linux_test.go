package atomic

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/untorn/untorn/internal/testutil"
)

// TestBufferedFileGroups writes atomic groups of 1, 2, 4 and 16 buffers from
// 4 KiB to the filesystem's unit max on XFS (loop device: software atomic
// writes) and reads every one back through the page cache, a shared mapping
// created before the writes, and O_DIRECT; invalid groups write nothing.
func TestBufferedFileGroups(t *testing.T) {
	testutil.RequireRoot(t)
	dev := testutil.LoopDevice(t, gib)
	testutil.Run(t, "mkfs.xfs", "-f", "-q", dev)
	dir := testutil.Mount(t, dev, "xfs")
	name := filepath.Join(dir, "groups")
	f, err := OpenBuffered(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 8 << 20
	if err := f.File().Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.File().Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	direct, err := os.OpenFile(name, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ref := make([]byte, size)
	check := func(off int64, n int, what string) {
		t.Helper()
		got := make([]byte, n)
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, ref[off:off+int64(n)]) {
			t.Fatalf("%s: buffered read of [%d,+%d) differs (%v)", what, off, n, err)
		}
		if !bytes.Equal(m[off:off+int64(n)], ref[off:off+int64(n)]) {
			t.Fatalf("%s: mapped view of [%d,+%d) differs", what, off, n)
		}
		a := alignedBuffer(n, 4096)
		if _, err := direct.ReadAt(a, off); err != nil || !bytes.Equal(a, ref[off:off+int64(n)]) {
			t.Fatalf("%s: O_DIRECT read of [%d,+%d) differs (%v)", what, off, n, err)
		}
	}
	l := f.Limits()
	if l.UnitMin == 0 || l.UnitMax < 65536 {
		t.Fatalf("limits %+v: XFS on a loop device should give 4 KiB..1 MiB", l)
	}
	seed := byte(1)
	for _, nbuf := range []int{1, 2, 4, 16} {
		for n := int(l.UnitMin); n <= int(min(l.UnitMax, size/4)); n *= 2 {
			off := int64(n) * int64(nbuf%4+1)
			// Dirty page cache inside the range first: the group replaces it.
			if _, err := f.WriteAt([]byte("dirty"), off+1); err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte{seed}, n)
			seed++
			bufs := make([][]byte, 0, nbuf)
			for i, per := 0, n/nbuf; i < nbuf; i++ {
				end := (i + 1) * per
				if i == nbuf-1 {
					end = n
				}
				bufs = append(bufs, data[i*per:end])
			}
			write := f.WriteGroupAt
			if nbuf == 2 {
				write = f.WriteGroupAtSync
			}
			if w, err := write(bufs, off); err != nil || w != n {
				t.Fatalf("group of %d bytes in %d buffers at %d: %d, %v", n, nbuf, off, w, err)
			}
			copy(ref[off:], data)
			check(off, n, "after a group")
		}
	}
	for _, bad := range []struct {
		n   int
		off int64
	}{
		{3 * int(l.UnitMin), 0},                // not a power of two
		{2 * int(l.UnitMin), int64(l.UnitMin)}, // misaligned
		{int(l.UnitMin) / 2, 0},                // below the unit min
		{2 * int(l.UnitMax), 0},                // above the unit max
	} {
		_, err := f.WriteGroupAt([][]byte{bytes.Repeat([]byte{0xff}, bad.n)}, bad.off)
		if !errors.Is(err, ErrBadWrite) {
			t.Errorf("group of %d at %d: %v, want ErrBadWrite", bad.n, bad.off, err)
		}
		check(bad.off, min(bad.n, size-int(bad.off)), "after a refused group")
	}
}

// TestOpenBufferedRefuses: a filesystem without atomic writes (ext4 on a
// loop device) and flags that cannot give buffered groups are errors.
func TestOpenBufferedRefuses(t *testing.T) {
	testutil.RequireRoot(t)
	dir, _ := testutil.Filesystem(t, 256<<20, "ext4")
	if _, err := OpenBuffered(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE, 0o644); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ext4 without atomic writes: %v, want ErrUnsupported", err)
	}
	for _, flag := range []int{os.O_RDONLY, os.O_RDWR | os.O_APPEND, os.O_RDWR | unix.O_DIRECT} {
		if _, err := OpenBuffered(filepath.Join(dir, "g"), flag|os.O_CREATE, 0o644); !errors.Is(err, ErrBadWrite) {
			t.Errorf("flag %#x: %v, want ErrBadWrite", flag, err)
		}
	}
}
