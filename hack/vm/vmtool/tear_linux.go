package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A slot is one atomic unit of the device. Every 512-byte sector of a slot
// written by tear-write carries the same record header, so after a reset a
// slot is either empty, whole (all sectors of one write) or torn.
const (
	sectorSize = 512
	slotMagic  = 0x4c53_4e52_4f54_4e55 // "UNTORNSL"
)

type tearFlags struct {
	slot, slots, writers, first int
	resetAfter                  time.Duration
	plain                       bool
	prefix                      string
}

func parseTearFlags(name string, args []string) (tearFlags, error) {
	var f tearFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.IntVar(&f.slot, "slot", 65536, "slot size in bytes (the atomic unit)")
	fs.IntVar(&f.slots, "slots", 1024, "number of slots")
	fs.IntVar(&f.first, "first", 0, "first slot (slots first..first+slots-1)")
	fs.StringVar(&f.prefix, "prefix", "tear", "prefix of the output lines (tear-ack, tear-slot, ...)")
	fs.IntVar(&f.writers, "writers", 16, "concurrent writers (writes in flight)")
	fs.DurationVar(&f.resetAfter, "reset-after", 3*time.Second, "reset the machine after this long")
	fs.BoolVar(&f.plain, "plain", false, "write without RWF_ATOMIC")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.slot < sectorSize || f.slot%sectorSize != 0 || f.slots < 1 || f.first < 0 || f.writers < 1 ||
		(name == "tear-write" && f.writers > f.slots) {
		return f, fmt.Errorf("bad geometry: --slot %d --slots %d --first %d --writers %d", f.slot, f.slots, f.first, f.writers)
	}
	return f, nil
}

func fillSlot(buf []byte, seq uint64, slot int) {
	for s := 0; s < len(buf)/sectorSize; s++ {
		b := buf[s*sectorSize : (s+1)*sectorSize]
		binary.LittleEndian.PutUint64(b[0:], slotMagic)
		binary.LittleEndian.PutUint64(b[8:], seq)
		binary.LittleEndian.PutUint32(b[16:], uint32(slot))
		binary.LittleEndian.PutUint32(b[20:], uint32(s))
		for i := 24; i < sectorSize; i++ {
			b[i] = byte(seq) ^ byte(i)
		}
	}
}

// cmdTearWrite rewrites the slots with increasing sequence numbers from
// several writers at once (writer w owns the slots with slot%writers == w,
// so no two writes to one slot are ever in flight together), prints each
// writer's last completed write every 100 ms, and after --reset-after
// resets the machine through sysrq 'b' with writes in flight: no sync, no
// clean shutdown.
func cmdTearWrite(dev string, args []string) error {
	f, err := parseTearFlags("tear-write", args)
	if err != nil {
		return err
	}
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dev, Err: err}
	}
	flags := unix.RWF_ATOMIC
	if f.plain {
		flags = 0
	}
	var seq, inflight atomic.Int64
	type ack struct{ seq, slot uint64 }
	acks := make([]atomic.Pointer[ack], f.writers)
	errc := make(chan error, f.writers)
	var wg sync.WaitGroup
	for w := 0; w < f.writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := alignedBuf(f.slot)
			for slot := f.first + w; ; slot += f.writers {
				if slot >= f.first+f.slots {
					slot = f.first + w
				}
				s := uint64(seq.Add(1))
				fillSlot(buf, s, slot)
				inflight.Add(1)
				_, err := unix.Pwritev2(fd, [][]byte{buf}, int64(slot)*int64(f.slot), flags)
				inflight.Add(-1)
				if err != nil {
					errc <- fmt.Errorf("write slot %d: %v", slot, errnoName(err))
					return
				}
				acks[w].Store(&ack{s, uint64(slot)})
			}
		}(w)
	}
	sysrq, err := os.OpenFile("/proc/sysrq-trigger", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(f.resetAfter)
	tick := time.NewTicker(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
		}
		for w := range acks {
			if a := acks[w].Load(); a != nil {
				fmt.Printf("%s-ack writer=%d slot=%d seq=%d\n", f.prefix, w, a.slot, a.seq)
			}
		}
	}
	// Reset while at least half the writers have a write in flight (or
	// after 10 s more), so that the device has accepted commands pending.
	for end := time.Now().Add(10 * time.Second); inflight.Load() < int64(f.writers/2) && time.Now().Before(end); {
		time.Sleep(100 * time.Microsecond)
	}
	fmt.Printf("%s-reset submitted=%d inflight=%d\n", f.prefix, seq.Load(), inflight.Load())
	if _, err := sysrq.Write([]byte("b")); err != nil {
		return err
	}
	time.Sleep(time.Minute)
	return fmt.Errorf("sysrq b did not reset the machine")
}

// cmdTearCheck reads every slot and prints one line per non-whole slot and
// a summary: "tear-check slots=N empty=E whole=W torn=T maxseq=M".
// Each whole slot is also printed as "tear-slot slot=S seq=Q" so that the
// caller can compare with the acknowledged writes.
func cmdTearCheck(dev string, args []string) error {
	f, err := parseTearFlags("tear-check", args)
	if err != nil {
		return err
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(fd)
	buf := alignedBuf(f.slot)
	var empty, whole, torn int
	var maxSeq uint64
	for slot := f.first; slot < f.first+f.slots; slot++ {
		if _, err := unix.Pread(fd, buf, int64(slot)*int64(f.slot)); err != nil {
			return &os.PathError{Op: "pread", Path: dev, Err: err}
		}
		seqs := map[uint64]int{}
		zero := 0
		for s := 0; s < f.slot/sectorSize; s++ {
			b := buf[s*sectorSize : (s+1)*sectorSize]
			if binary.LittleEndian.Uint64(b[0:]) != slotMagic {
				zero++
				continue
			}
			q := binary.LittleEndian.Uint64(b[8:])
			ok := binary.LittleEndian.Uint32(b[16:]) == uint32(slot) && binary.LittleEndian.Uint32(b[20:]) == uint32(s)
			for i := 24; ok && i < sectorSize; i++ {
				ok = b[i] == byte(q)^byte(i)
			}
			if !ok {
				q = ^uint64(0) // a corrupt sector counts as its own write
			}
			seqs[q]++
		}
		switch {
		case zero == f.slot/sectorSize:
			empty++
		case zero == 0 && len(seqs) == 1:
			whole++
			for q := range seqs {
				maxSeq = max(maxSeq, q)
				fmt.Printf("%s-slot slot=%d seq=%d\n", f.prefix, slot, q)
			}
		default:
			torn++
			fmt.Printf("%s-torn slot=%d empty-sectors=%d writes=%v\n", f.prefix, slot, zero, seqs)
		}
	}
	fmt.Printf("%s-check slots=%d empty=%d whole=%d torn=%d maxseq=%d\n", f.prefix, f.slots, empty, whole, torn, maxSeq)
	return nil
}
