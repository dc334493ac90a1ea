package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cmdMBR writes a DOS partition table with up to four Linux partitions
// given as START:SIZE in 512-byte sectors and asks the kernel to re-read
// it. The guest root has no partitioning tool; this is all a test needs.
func cmdMBR(dev string, parts []string) error {
	if len(parts) == 0 || len(parts) > 4 {
		return fmt.Errorf("mbr: want 1 to 4 partitions as START:SIZE (sectors)")
	}
	mbr := make([]byte, 512)
	binary.LittleEndian.PutUint32(mbr[440:], 0x756e746f) // disk identifier
	for i, p := range parts {
		a, b, ok := strings.Cut(p, ":")
		start, err1 := strconv.ParseUint(a, 10, 32)
		size, err2 := strconv.ParseUint(b, 10, 32)
		if !ok || err1 != nil || err2 != nil || start == 0 || size == 0 {
			return fmt.Errorf("mbr: bad partition %q: want START:SIZE in sectors", p)
		}
		e := mbr[446+16*i : 446+16*(i+1)]
		copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused: LBA only
		e[4] = 0x83
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(start))
		binary.LittleEndian.PutUint32(e[12:], uint32(size))
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return &os.PathError{Op: "BLKRRPART", Path: dev, Err: err}
	}
	return nil
}

// cmdJGet prints the values of top-level keys of the JSON object on stdin,
// one per line (arrays space-separated); a missing key is an error.
func cmdJGet(keys []string) error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("jget: stdin is not a JSON object: %v", err)
	}
	for _, k := range keys {
		v, ok := m[k]
		if !ok {
			return fmt.Errorf("jget: no key %q", k)
		}
		fmt.Println(jsonText(v))
	}
	return nil
}

func jsonText(v any) string {
	switch x := v.(type) {
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = jsonText(e)
		}
		return strings.Join(s, " ")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return ""
	case string:
		return x
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// cmdJSum sums the numeric top-level KEY over the JSON objects on stdin
// (one per line, as the shim writes its counters); no objects sums to 0.
func cmdJSum(key string) error {
	dec := json.NewDecoder(os.Stdin)
	var sum float64
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("jsum: %v", err)
		}
		if v, ok := m[key].(float64); ok {
			sum += v
		}
	}
	fmt.Println(strconv.FormatFloat(sum, 'f', -1, 64))
	return nil
}
