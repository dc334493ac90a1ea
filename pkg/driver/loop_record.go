package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// The loop backend's records: <id>.json beside each image, the backend's
// mark on the files it made. A record is created exclusively (O_EXCL) and
// later replaced only after it was read back as this backend's own.

const (
	// loopStateCreating marks a record whose image may not be in place yet;
	// Create resumes such a volume, nothing else returns it.
	loopStateCreating = "creating"
	// loopRecordMax caps what is read of a record file.
	loopRecordMax = 1 << 20
)

type loopRecord struct {
	ID        string            `json:"id"`
	SizeBytes int64             `json:"sizeBytes"`
	Meta      map[string]string `json:"meta"`
	CreatedBy string            `json:"createdBy"`
	// State is loopStateCreating until the image has its name; empty after.
	State string `json:"state,omitempty"`
	// Image is the identity of the image file the backend created. Records
	// written before identities were kept have none.
	Image *fileIdentity `json:"image,omitempty"`
}

// ready reports whether the volume was completely created.
func (r loopRecord) ready() bool { return r.State == "" && r.SizeBytes > 0 }

func (r loopRecord) volume(dev string) BackendVolume {
	return BackendVolume{ID: r.ID, SizeBytes: r.SizeBytes, Device: dev, Meta: copyMeta(r.Meta)}
}

func copyMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// foreignFileError: a file at a volume's path that the backend did not
// create. Such a file is never opened for writing, truncated, replaced or
// removed. To callers it is not a volume, so it unwraps to
// ErrVolumeNotFound; Create turns it into ErrAlreadyExists.
type foreignFileError struct{ path, why string }

func (e *foreignFileError) Error() string {
	return fmt.Sprintf("%s %s: it was not created by %s and is left untouched; move it away to use this volume name",
		e.path, e.why, DriverName)
}

func (e *foreignFileError) Unwrap() error { return ErrVolumeNotFound }

// alreadyExists turns a foreign-file error into ErrAlreadyExists (without
// ErrVolumeNotFound, which the RPC boundary would map first).
func alreadyExists(err error) error {
	var fe *foreignFileError
	if errors.As(err, &fe) {
		return fmt.Errorf("%w: %s", ErrAlreadyExists, fe.Error())
	}
	return err
}

func (b *LoopBackend) readRecord(id string) (loopRecord, error) {
	_, metaPath, err := b.paths(id)
	if err != nil {
		return loopRecord{}, err
	}
	return readRecordAt(metaPath, id)
}

// readRecordAt reads the record of volume id from metaPath; anything but
// a record of this backend for id is a foreignFileError.
func readRecordAt(metaPath, id string) (loopRecord, error) {
	f, err := openNoFollow(metaPath, os.O_RDONLY)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return loopRecord{}, fmt.Errorf("%w: %s", ErrVolumeNotFound, id)
	case errors.Is(err, unix.ELOOP):
		return loopRecord{}, &foreignFileError{metaPath, "is a symbolic link"}
	case err != nil:
		return loopRecord{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return loopRecord{}, err
	}
	if !fi.Mode().IsRegular() {
		return loopRecord{}, &foreignFileError{metaPath, "is not a regular file (" + fi.Mode().Type().String() + ")"}
	}
	data, err := io.ReadAll(io.LimitReader(f, loopRecordMax+1))
	if err != nil {
		return loopRecord{}, err
	}
	var r loopRecord
	if len(data) > loopRecordMax {
		return loopRecord{}, &foreignFileError{metaPath, "is larger than any record of this driver"}
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return loopRecord{}, &foreignFileError{metaPath, "is not a volume record (" + err.Error() + ")"}
	}
	if r.ID != id || r.CreatedBy != loopCreatedBy {
		return loopRecord{}, &foreignFileError{metaPath, fmt.Sprintf("holds no volume record of this driver (id %q, createdBy %q)", r.ID, r.CreatedBy)}
	}
	return r, nil
}

// encodeRecord returns the record's path and content.
func (b *LoopBackend) encodeRecord(r loopRecord) (string, []byte, error) {
	_, metaPath, err := b.paths(r.ID)
	if err != nil {
		return "", nil, err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	return metaPath, data, err
}

// createRecord writes a new record; it fails, touching nothing, when any
// file is at the record's path.
func (b *LoopBackend) createRecord(r loopRecord) error {
	metaPath, data, err := b.encodeRecord(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(metaPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, os.ErrExist) {
		return &foreignFileError{metaPath, "appeared while the volume was being created"}
	}
	if err != nil {
		return err
	}
	if err := writeClose(f, data, true); err != nil {
		os.Remove(metaPath) // made just now by this call
		return err
	}
	return syncDir(b.dir)
}

// replaceRecord replaces a record the caller has read back as this
// backend's own, through a new exclusive temporary file and a rename.
func (b *LoopBackend) replaceRecord(r loopRecord) error {
	metaPath, data, err := b.encodeRecord(r)
	if err != nil {
		return err
	}
	if err := replaceFile(metaPath, recordTempPrefix(r.ID)+"*", data, true); err != nil {
		return err
	}
	return syncDir(b.dir)
}

// recordTempPrefix starts the names of replaceRecord's temporary files
// for volume id.
func recordTempPrefix(id string) string { return id + ".json.tmp-" }

// removeRecordTemps removes the temporary files that replaceRecord leaves
// when the process is killed between creating one and renaming it over
// the record: files <id>.json.tmp-* that are empty (killed before the
// write) or hold a record of this backend for id. Anything else there is
// left alone. The caller holds b.mu, so no replaceRecord is under way.
func (b *LoopBackend) removeRecordTemps(id string) error {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), recordTempPrefix(id)) {
			continue
		}
		p := filepath.Join(b.dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Size() > 0 {
			if _, err := readRecordAt(p, id); err != nil {
				klog.InfoS("leaving a file this driver did not write", "volumeID", id, "path", p, "reason", err.Error())
				continue
			}
		}
		if err := removeIfExists(p); err != nil {
			return err
		}
	}
	return nil
}

// imageTempPrefix starts the names newUnlinkedFile gives a new image
// where the filesystem has no O_TMPFILE.
func imageTempPrefix(id string) string { return id + ".img.tmp-" }

// removeImageTemps removes the temporary image a kill left behind on a
// filesystem without O_TMPFILE: a file <id>.img.tmp-* with the identity
// that r records (the record is written before the image gets its name).
// Files with any other identity are left alone. The caller holds b.mu.
func (b *LoopBackend) removeImageTemps(r loopRecord) error {
	if r.Image == nil {
		return nil
	}
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), imageTempPrefix(r.ID)) {
			continue
		}
		p := filepath.Join(b.dir, e.Name())
		f, err := openNoFollow(p, os.O_RDONLY)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		own := err == nil && fi.Mode().IsRegular()
		if own {
			ident, err := identityOf(f)
			own = err == nil && ident.same(*r.Image)
		}
		f.Close()
		if own {
			if err := removeIfExists(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// imageState is what is at a volume's image path.
type imageState int

const (
	imageMissing imageState = iota
	imageOwn                // the file the backend created for the volume
)

// checkImage tells whether the file at the image path is the one the
// backend created for r: a regular file (never a symlink, directory or
// device) with the identity the record holds. Anything else is a
// foreignFileError. Records without an identity (written before
// identities were kept) accept any regular file.
func (b *LoopBackend) checkImage(r loopRecord) (imageState, error) {
	img, _, err := b.paths(r.ID)
	if err != nil {
		return imageMissing, err
	}
	fi, err := os.Lstat(img)
	if errors.Is(err, os.ErrNotExist) {
		return imageMissing, nil
	}
	if err != nil {
		return imageMissing, err
	}
	if err := foreignType(img, fi); err != nil {
		return imageMissing, err
	}
	f, err := openNoFollow(img, os.O_RDONLY)
	if errors.Is(err, os.ErrNotExist) {
		return imageMissing, nil
	}
	if err != nil {
		return imageMissing, err
	}
	defer f.Close()
	return imageOwn, b.checkOpenImage(r, f)
}

// openImage opens the volume's own image (see checkImage) for flag.
func (b *LoopBackend) openImage(r loopRecord, flag int) (*os.File, error) {
	img, _, err := b.paths(r.ID)
	if err != nil {
		return nil, err
	}
	f, err := openNoFollow(img, flag)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, &foreignFileError{img, "is a symbolic link"}
	case errors.Is(err, unix.EISDIR):
		return nil, &foreignFileError{img, "is a directory"}
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("image %s of volume %s is missing: %w", img, r.ID, err)
	case err != nil:
		return nil, err
	}
	if err := b.checkOpenImage(r, f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (b *LoopBackend) checkOpenImage(r loopRecord, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := foreignType(f.Name(), fi); err != nil {
		return err
	}
	if r.Image == nil {
		return nil
	}
	got, err := identityOf(f)
	if err != nil {
		return err
	}
	if !got.same(*r.Image) {
		return &foreignFileError{f.Name(), fmt.Sprintf("is not the image this driver created for volume %s (inode %d, recorded %d)",
			r.ID, got.Ino, r.Image.Ino)}
	}
	return nil
}

func foreignType(p string, fi os.FileInfo) error {
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return &foreignFileError{p, "is a symbolic link"}
	case fi.IsDir():
		return &foreignFileError{p, "is a directory"}
	case !fi.Mode().IsRegular():
		return &foreignFileError{p, "is not a regular file (" + fi.Mode().Type().String() + ")"}
	}
	return nil
}
