package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// Inline ephemeral volumes (the shim).
const (
	contextEphemeral = "csi.storage.k8s.io/ephemeral"
	contextType      = "type"
	typeShim         = "shim"
)

// Volume IDs are "uv-" and 32 lower-case hex digits derived from the
// volume name, so a repeated CreateVolume lands on the same ID.
var volumeIDRE = regexp.MustCompile(`^uv-[0-9a-f]{32}$`)

func volumeIDForName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "uv-" + hex.EncodeToString(sum[:16])
}

// validVolumeID reports whether id is one this driver hands out. Nothing
// that fails this check is ever used in a path.
func validVolumeID(id string) bool { return volumeIDRE.MatchString(id) }

// safeTokenRE accepts IDs from elsewhere (kubelet's inline ephemeral
// volume IDs) that are only logged and used as map keys.
var safeTokenRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validToken(id string) bool { return safeTokenRE.MatchString(id) && !strings.Contains(id, "..") }

// required refuses a request whose field is empty.
func required(field, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is required", ErrInvalidArgument, field)
	}
	return nil
}

// checkPath validates a path the CO gave us: absolute, clean, no NUL.
func checkPath(field, p string) error {
	if err := required(field, p); err != nil {
		return err
	}
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) || len(p) > 4096 {
		return fmt.Errorf("%w: %s %q must be an absolute path", ErrInvalidArgument, field, p)
	}
	return nil
}

// supportedAccessMode reports whether the driver serves mode.
func supportedAccessMode(m csi.VolumeCapability_AccessMode_Mode) bool {
	switch m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		return true
	}
	return false
}

// checkCapability validates one capability on its own: access mode,
// access type, a known fsType, single mount flags. Whether its fsType is
// the volume's is volumeSpec.checkFSType's.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("%w: volume capability is empty", ErrInvalidArgument)
	}
	if c.GetAccessMode() == nil {
		return fmt.Errorf("%w: volume capability has no access mode", ErrInvalidArgument)
	}
	if m := c.GetAccessMode().GetMode(); !supportedAccessMode(m) {
		return fmt.Errorf("%w: access mode %s is not supported; accepted: SINGLE_NODE_WRITER, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER, SINGLE_NODE_READER_ONLY",
			ErrInvalidArgument, m)
	}
	switch {
	case c.GetBlock() != nil:
	case c.GetMount() != nil:
		fs := c.GetMount().GetFsType()
		if fs != "" && fs != string(untorn.FSExt4) && fs != string(untorn.FSXFS) {
			return fmt.Errorf("%w: capability fsType %q is not supported; accepted: ext4, xfs", ErrInvalidArgument, fs)
		}
		for _, f := range c.GetMount().GetMountFlags() {
			if f == "" || strings.ContainsAny(f, ",\x00") {
				return fmt.Errorf("%w: mount flag %q is not a single option", ErrInvalidArgument, f)
			}
		}
	default:
		return fmt.Errorf("%w: volume capability needs an access type (mount or block)", ErrInvalidArgument)
	}
	return nil
}

func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return fmt.Errorf("%w: volume capabilities are required", ErrInvalidArgument)
	}
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return err
		}
	}
	return nil
}

// checkFSType refuses capabilities (already checked) whose fsType differs
// from the volume's.
func (s volumeSpec) checkFSType(caps ...*csi.VolumeCapability) error {
	for _, c := range caps {
		if fs := c.GetMount().GetFsType(); fs != "" && fs != string(s.FSType) {
			return fmt.Errorf("%w: capability fsType %q differs from the volume's fsType %q", ErrInvalidArgument, fs, s.FSType)
		}
	}
	return nil
}
