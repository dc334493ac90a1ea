package driver

import (
	"os"
	"path/filepath"
)

// replaceFile writes data to a new temporary file beside p, named by the
// os.CreateTemp pattern (the node's state and the loop backend's records
// each name theirs, so that each can find what a kill left behind), syncs
// it when sync is set and renames it over p: readers see the old or the
// new content. CreateTemp opens O_EXCL with a random name, so whatever
// already sits in the directory, a symlink included, is never opened.
func replaceFile(p, pattern string, data []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(p), pattern)
	if err != nil {
		return err
	}
	err = writeClose(f, data, sync)
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// writeClose writes data to f, syncs it when sync is set, and closes it.
func writeClose(f *os.File, data []byte, sync bool) error {
	_, err := f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
