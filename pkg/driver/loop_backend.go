package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// LoopBackend keeps each volume as a sparse file <id>.img under a directory,
// attached as a loop device with direct I/O, and its metadata in <id>.json
// next to it. The record is created exclusively and holds the identity
// (device, inode, birth time) of the image the backend made; a file at
// either path that the backend did not create is never adopted, opened
// for writing, followed (symlinks), replaced or removed.
type LoopBackend struct {
	dir     string
	reserve int64
	exec    exec.Interface
	sysfs   string

	// mu serialises space accounting and record updates (create, expand,
	// delete, set meta) so concurrent calls on different volumes cannot
	// overcommit the directory.
	mu sync.Mutex
}

const (
	loopAllocationUnit = 1 << 20
	loopCreatedBy      = DriverName
)

var _ Backend = (*LoopBackend)(nil)

// NewLoopBackend returns a loop backend in dir keeping reserve bytes free.
func NewLoopBackend(dir string, reserve int64, runner exec.Interface) *LoopBackend {
	return &LoopBackend{dir: dir, reserve: reserve, exec: runner, sysfs: "/sys"}
}

func (b *LoopBackend) Name() string          { return "loop" }
func (b *LoopBackend) AllocationUnit() int64 { return loopAllocationUnit }

func (b *LoopBackend) Check(ctx context.Context) error {
	fi, err := os.Stat(b.dir)
	if err != nil {
		return fmt.Errorf("%w: loop dir: %v", ErrBackendUnavailable, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: loop dir %s is not a directory", ErrBackendUnavailable, b.dir)
	}
	if _, err := b.exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("%w: losetup not found: %v", ErrBackendUnavailable, err)
	}
	return nil
}

func (b *LoopBackend) paths(id string) (img, meta string, err error) {
	if !validVolumeID(id) {
		return "", "", fmt.Errorf("%w: %q is not a volume ID of this driver", ErrVolumeNotFound, id)
	}
	return filepath.Join(b.dir, id+".img"), filepath.Join(b.dir, id+".json"), nil
}

// Create makes the volume's record and image exclusively: it refuses
// (ErrAlreadyExists, naming the file) when a file it did not create is at
// either path, and it resumes a create of its own that was interrupted.
//
// The order keeps every step recoverable: the image is made without a name
// (O_TMPFILE) and sized, the record is created (O_EXCL) in state
// "creating" with the image's identity, the image gets its name (link,
// which never replaces a file), and the record is marked complete.
func (b *LoopBackend) Create(ctx context.Context, id string, sizeBytes int64, meta map[string]string) (BackendVolume, error) {
	img, _, err := b.paths(id)
	if err != nil {
		return BackendVolume{}, err
	}
	if sizeBytes <= 0 {
		return BackendVolume{}, fmt.Errorf("%w: volume size %d must be positive", ErrInvalidArgument, sizeBytes)
	}
	rounded, ok := roundUpChecked(sizeBytes, loopAllocationUnit)
	if !ok {
		return BackendVolume{}, fmt.Errorf("%w: %d bytes cannot be rounded up to a multiple of %d", ErrOutOfRange, sizeBytes, loopAllocationUnit)
	}
	sizeBytes = rounded
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	switch {
	case err == nil:
		return b.resumeLocked(r, sizeBytes, meta)
	case !errors.Is(err, ErrVolumeNotFound) || isForeign(err):
		return BackendVolume{}, alreadyExists(err)
	}
	if _, err := os.Lstat(img); err == nil {
		return BackendVolume{}, alreadyExists(&foreignFileError{img, "exists without a record of this driver"})
	} else if !errors.Is(err, os.ErrNotExist) {
		return BackendVolume{}, err
	}
	if err := b.checkSpaceLocked(sizeBytes, ""); err != nil {
		return BackendVolume{}, err
	}
	r = loopRecord{ID: id, SizeBytes: sizeBytes, Meta: copyMeta(meta), CreatedBy: loopCreatedBy, State: loopStateCreating}
	return b.makeImageLocked(r, b.createRecord)
}

// resumeLocked answers Create for a volume whose record is the backend's
// own: a complete volume is returned unchanged (the caller compares), an
// interrupted create is finished.
func (b *LoopBackend) resumeLocked(r loopRecord, sizeBytes int64, meta map[string]string) (BackendVolume, error) {
	state, err := b.checkImage(r)
	if err != nil {
		return BackendVolume{}, alreadyExists(err)
	}
	if r.ready() && state == imageOwn {
		return r.volume(""), nil
	}
	if r.ready() {
		img, _, _ := b.paths(r.ID)
		return BackendVolume{}, fmt.Errorf("volume %s exists but its image %s is missing", r.ID, img)
	}
	// An interrupted create: finish it with this request's size and metadata.
	if err := b.checkSpaceLocked(sizeBytes, r.ID); err != nil {
		return BackendVolume{}, err
	}
	r.SizeBytes, r.Meta, r.State = sizeBytes, copyMeta(meta), loopStateCreating
	if state == imageMissing {
		if err := b.removeImageTemps(r); err != nil {
			return BackendVolume{}, err
		}
		return b.makeImageLocked(r, b.replaceRecord)
	}
	if r.Image == nil {
		// A record from before identities were kept: its image cannot be
		// told from a foreign file.
		img, _, _ := b.paths(r.ID)
		return BackendVolume{}, alreadyExists(&foreignFileError{img, "cannot be told apart from a file this driver did not create"})
	}
	f, err := b.openImage(r, os.O_RDWR)
	if err != nil {
		return BackendVolume{}, alreadyExists(err)
	}
	err = growFile(f, sizeBytes)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return BackendVolume{}, err
	}
	r.State = ""
	if err := b.replaceRecord(r); err != nil {
		return BackendVolume{}, err
	}
	return r.volume(""), nil
}

// makeImageLocked creates r's image under no name, records its identity
// with writeRecord (createRecord for a new volume), names it and marks the
// record complete.
func (b *LoopBackend) makeImageLocked(r loopRecord, writeRecord func(loopRecord) error) (BackendVolume, error) {
	img, metaPath, _ := b.paths(r.ID)
	f, err := newUnlinkedFile(b.dir, r.ID+".img")
	if err != nil {
		return BackendVolume{}, err
	}
	defer f.Close()
	if err := growFile(f, r.SizeBytes); err != nil {
		return BackendVolume{}, err
	}
	if err := f.Sync(); err != nil {
		return BackendVolume{}, err
	}
	ident, err := identityOf(f)
	if err != nil {
		return BackendVolume{}, err
	}
	r.Image = &ident
	if err := writeRecord(r); err != nil {
		return BackendVolume{}, alreadyExists(err)
	}
	if err := linkInto(f, img); err != nil {
		if errors.Is(err, os.ErrExist) {
			// A file appeared at the image path meanwhile: it is not
			// ours. Drop the record made for it, leave the file.
			os.Remove(metaPath)
			return BackendVolume{}, alreadyExists(&foreignFileError{img, "appeared while the volume was being created"})
		}
		return BackendVolume{}, err
	}
	if err := syncDir(b.dir); err != nil {
		return BackendVolume{}, err
	}
	r.State = ""
	if err := b.replaceRecord(r); err != nil {
		return BackendVolume{}, err
	}
	return r.volume(""), nil
}

// growFile extends f to size (sparse); it never shrinks. A size the
// filesystem cannot hold (EFBIG) is ErrOutOfRange.
func growFile(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	if err := f.Truncate(size); err != nil {
		if errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("%w: %s cannot be %d bytes: %v", ErrOutOfRange, f.Name(), size, err)
		}
		return err
	}
	return nil
}

// checkSpaceLocked fails with ErrNoSpace when size more bytes do not fit;
// the reservation of volume exclude (one being resumed) is not counted.
func (b *LoopBackend) checkSpaceLocked(size int64, exclude string) error {
	avail, err := b.capacityLocked(exclude)
	if err != nil {
		return err
	}
	if size > avail {
		return fmt.Errorf("%w: %d bytes requested, %d available in %s", ErrNoSpace, size, avail, b.dir)
	}
	return nil
}

func isForeign(err error) bool {
	var fe *foreignFileError
	return errors.As(err, &fe)
}

// Get returns a completely created volume with its loop device when one
// is attached. A record or image the backend did not create is
// ErrVolumeNotFound (a foreignFileError), as is an unfinished create.
func (b *LoopBackend) Get(ctx context.Context, id string) (BackendVolume, error) {
	r, err := b.readRecord(id)
	if err != nil {
		return BackendVolume{}, err
	}
	if !r.ready() {
		return BackendVolume{}, fmt.Errorf("%w: the creation of volume %s did not finish", ErrVolumeNotFound, id)
	}
	state, err := b.checkImage(r)
	if err != nil || state == imageMissing {
		return r.volume(""), err
	}
	devs, err := b.loopDevices(ctx, id)
	if err != nil {
		return BackendVolume{}, err
	}
	dev := ""
	if len(devs) > 0 {
		dev = devs[0]
	}
	return r.volume(dev), nil
}

// Delete removes what the backend created for the volume: its loop
// devices (checked to be gone), its image, the temporary files a kill
// left behind and its record. A record or
// image it did not create is left untouched; when only the image is
// foreign, the backend's own record is removed and the image stays.
func (b *LoopBackend) Delete(ctx context.Context, id string) error {
	img, metaPath, err := b.paths(id)
	if err != nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	if isForeign(err) {
		klog.InfoS("not deleting a file this driver did not create", "volumeID", id, "reason", err.Error())
		return nil
	}
	if errors.Is(err, ErrVolumeNotFound) {
		return b.removeRecordTemps(id)
	}
	if err != nil {
		return err
	}
	state, err := b.checkImage(r)
	if isForeign(err) {
		klog.InfoS("removing the volume record, leaving its image: this driver did not create it",
			"volumeID", id, "reason", err.Error())
		if err := b.removeRecordTemps(id); err != nil {
			return err
		}
		return removeIfExists(metaPath)
	}
	if err != nil {
		return err
	}
	var devs []string
	if state == imageOwn {
		if devs, err = b.detachAll(ctx, id); err != nil {
			return err
		}
		if err := removeIfExists(img); err != nil {
			return err
		}
	}
	// Before the record, so that a retry after a kill still finds them.
	if err := b.removeImageTemps(r); err != nil {
		return err
	}
	if err := b.removeRecordTemps(id); err != nil {
		return err
	}
	if err := removeIfExists(metaPath); err != nil {
		return err
	}
	klog.V(4).InfoS("loop volume removed", "volumeID", id, "detached", devs)
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Expand grows the volume to at least sizeBytes rounded up to the
// allocation unit; it never shrinks, and it never reports less than asked:
// a size that cannot be represented is ErrOutOfRange, one that does not
// fit ErrNoSpace.
func (b *LoopBackend) Expand(ctx context.Context, id string, sizeBytes int64) (BackendVolume, error) {
	if _, _, err := b.paths(id); err != nil {
		return BackendVolume{}, err
	}
	want, ok := roundUpChecked(sizeBytes, loopAllocationUnit)
	if !ok || sizeBytes < 0 {
		return BackendVolume{}, fmt.Errorf("%w: %d bytes cannot be rounded up to a multiple of %d", ErrOutOfRange, sizeBytes, loopAllocationUnit)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	if err != nil {
		return BackendVolume{}, err
	}
	if !r.ready() {
		return BackendVolume{}, fmt.Errorf("%w: the creation of volume %s did not finish", ErrVolumeNotFound, id)
	}
	f, err := b.openImage(r, os.O_RDWR)
	if err != nil {
		return BackendVolume{}, err
	}
	defer f.Close()
	if want > r.SizeBytes {
		if err := b.checkSpaceLocked(want-r.SizeBytes, ""); err != nil {
			return BackendVolume{}, fmt.Errorf("growing %s to %d bytes: %w", id, want, err)
		}
		if err := growFile(f, want); err != nil {
			return BackendVolume{}, err
		}
		r.SizeBytes = want
		if err := b.replaceRecord(r); err != nil {
			return BackendVolume{}, err
		}
	}
	devs, err := b.loopDevices(ctx, id)
	if err != nil {
		return BackendVolume{}, err
	}
	for _, dev := range devs {
		// Make the loop device see the new size of its file (online).
		if _, err := b.run(ctx, "losetup", "--set-capacity", dev); err != nil {
			return BackendVolume{}, err
		}
	}
	dev := ""
	if len(devs) > 0 {
		dev = devs[0]
	}
	return r.volume(dev), nil
}

// List returns the completely created volumes whose record and image are
// the backend's own; foreign files are skipped.
func (b *LoopBackend) List(ctx context.Context) ([]BackendVolume, error) {
	recs, err := b.records()
	if err != nil {
		return nil, err
	}
	var out []BackendVolume
	for _, r := range recs {
		if !r.ready() {
			continue
		}
		if _, err := b.checkImage(r); isForeign(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, r.volume(""))
	}
	return out, nil
}

// records reads every record of the backend, sorted by ID, unfinished
// ones included; files it did not write are skipped.
func (b *LoopBackend) records() ([]loopRecord, error) {
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBackendUnavailable, err)
	}
	var out []loopRecord
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validVolumeID(id) {
			continue
		}
		r, err := b.readRecord(id)
		if errors.Is(err, ErrVolumeNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (b *LoopBackend) Capacity(ctx context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.capacityLocked("")
}

// capacityLocked is the directory's free space minus the reserve minus
// what the backend's sparse images (unfinished ones too, except exclude)
// may still grow into.
func (b *LoopBackend) capacityLocked(exclude string) (int64, error) {
	free, err := freeBytes(b.dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBackendUnavailable, err)
	}
	recs, err := b.records()
	if err != nil {
		return 0, err
	}
	avail := free - b.reserve
	for _, r := range recs {
		if r.ID == exclude || r.SizeBytes <= 0 {
			continue
		}
		img, _, _ := b.paths(r.ID)
		used, err := allocatedBytes(img)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if r.SizeBytes > used {
			avail -= r.SizeBytes - used
		}
	}
	return max(avail, 0), nil
}

// Attach returns the loop device of the volume's image, attaching it with
// direct I/O if no loop device holds it (after a restart or reboot). It
// attaches only the image the backend created.
func (b *LoopBackend) Attach(ctx context.Context, id string) (string, error) {
	img, _, err := b.paths(id)
	if err != nil {
		return "", err
	}
	r, err := b.readRecord(id)
	if err != nil {
		return "", err
	}
	if !r.ready() {
		return "", fmt.Errorf("%w: the creation of volume %s did not finish", ErrVolumeNotFound, id)
	}
	f, err := b.openImage(r, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	f.Close()
	devs, err := b.loopDevices(ctx, id)
	if err != nil {
		return "", err
	}
	if len(devs) > 0 {
		return devs[0], nil
	}
	out, err := b.run(ctx, "losetup", "--find", "--show", "--direct-io=on", img)
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(out)
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", dev)
	}
	klog.V(2).InfoS("attached loop device", "volumeID", id, "device", dev)
	return dev, nil
}

func (b *LoopBackend) SetMeta(ctx context.Context, id string, meta map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.readRecord(id)
	if err != nil {
		return err
	}
	if !r.ready() {
		return fmt.Errorf("%w: the creation of volume %s did not finish", ErrVolumeNotFound, id)
	}
	if r.Meta == nil {
		r.Meta = map[string]string{}
	}
	for k, v := range meta {
		if v == "" {
			delete(r.Meta, k)
		} else {
			r.Meta[k] = v
		}
	}
	return b.replaceRecord(r)
}
