package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// captureStdout runs f and returns what it printed.
func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatalf("%v\n%s", ferr, out)
	}
	return out
}

func TestTearCheckClassifiesSlotsOfARegion(t *testing.T) {
	const slot = 8192
	dev := filepath.Join(t.TempDir(), "disk")
	f, err := os.Create(dev)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, slot)
	// slots 0-1 belong to another region and are torn: they must not count
	for s := 0; s < 2; s++ {
		fillSlot(buf, 1, s)
		f.WriteAt(buf[:slot/2], int64(s*slot))
	}
	fillSlot(buf, 7, 2) // whole
	f.WriteAt(buf, 2*slot)
	fillSlot(buf, 8, 3) // torn: second half from another write
	f.WriteAt(buf, 3*slot)
	fillSlot(buf, 9, 3)
	f.WriteAt(buf[slot/2:], 3*slot+slot/2)
	fillSlot(buf, 10, 4) // torn: half written over an empty slot
	f.WriteAt(buf[:slot/2], 4*slot)
	// slot 5 empty
	if err := f.Truncate(8 * slot); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := captureStdout(t, func() error {
		return cmdTearCheck(dev, []string{"--slot", "8192", "--slots", "4", "--first", "2", "--prefix", "plain"})
	})
	if !strings.Contains(out, "plain-check slots=4 empty=1 whole=1 torn=2 maxseq=7\n") {
		t.Fatalf("summary wrong:\n%s", out)
	}
	for _, want := range []string{"plain-slot slot=2 seq=7\n", "plain-torn slot=3 empty-sectors=0 ", "plain-torn slot=4 empty-sectors=8 "} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "slot=0 ") || strings.Contains(out, "slot=1 ") || strings.Contains(out, "tear-") {
		t.Errorf("slots outside the region or the default prefix reported:\n%s", out)
	}
}
