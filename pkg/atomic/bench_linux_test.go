package atomic

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/untorn/untorn/internal/testutil"
	"golang.org/x/sys/unix"
)

// BenchmarkWrite compares RWF_ATOMIC writes with plain O_DIRECT writes of
// the same size on XFS on a loop device (software atomic writes), cycling
// over a 64 MiB preallocated range. Run as root:
//
//	go test -run XXX -bench Write -benchtime 2000x ./pkg/atomic
func BenchmarkWrite(b *testing.B) {
	dir, _ := testutil.Filesystem(b, 1<<30, "xfs", "-b", "size=4096", "-m", "reflink=1")
	for _, unit := range []int{16 << 10, 64 << 10} {
		for _, mode := range []string{"direct", "atomic"} {
			b.Run(mode+"-"+FormatSize(uint64(unit)), func(b *testing.B) {
				name := filepath.Join(dir, mode+FormatSize(uint64(unit)))
				f, err := OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				defer os.Remove(name)
				defer f.Close()
				const span = 64 << 20
				if err := unix.Fallocate(int(f.Fd()), 0, 0, span); err != nil {
					b.Fatal(err)
				}
				buf := alignedBuffer(unit, 4096)
				b.SetBytes(int64(unit))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					off := int64(i*unit) % span
					if mode == "atomic" {
						_, err = f.WriteAtomicAt(buf, off)
					} else {
						_, err = unix.Pwrite(int(f.Fd()), buf, off)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerify measures one Verify (O_TMPFILE, statx, one 16 KiB
// RWF_ATOMIC write and read back) on XFS on a loop device.
func BenchmarkVerify(b *testing.B) {
	dir, _ := testutil.Filesystem(b, 1<<30, "xfs", "-b", "size=4096", "-m", "reflink=1")
	for i := 0; i < b.N; i++ {
		if v, err := Verify(dir, 16<<10); err != nil || !v.Atomic {
			b.Fatalf("%+v %v", v, err)
		}
	}
}
