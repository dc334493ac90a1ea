package atomic_test

import (
	"errors"
	"fmt"
	"log"
	"os"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// A 16 KiB record written from a header and a body as one atomic group on an
// untorn volume: after a crash the record is either all old or all new, and
// readers of the page cache see it as soon as the call returns.
func ExampleBufferedFile() {
	f, err := untorn.OpenBuffered("/var/lib/app/records", os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, untorn.ErrUnsupported) {
		log.Fatal("not an untorn volume: no atomic writes here")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	header := make([]byte, 512)
	body := make([]byte, 16384-512)
	// 16 KiB at a multiple of 16 KiB, within Limits().UnitMin..UnitMax.
	if _, err := f.WriteGroupAtSync([][]byte{header, body}, 3*16384); err != nil {
		log.Fatal(err)
	}
	fmt.Println("record 3 written whole")
}
