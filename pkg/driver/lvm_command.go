package driver

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// The lvm2 command layer of LVMBackend: running the commands, parsing their
// JSON reports and LV tags, checking VG and LV names and classifying failures.

// Fields the backend reads from lvs and vgs.
const (
	lvFields = "lv_name,lv_size,lv_attr,lv_path,lv_dm_path,lv_tags"
	vgFields = "vg_name,vg_size,vg_free,vg_extent_size"
)

var lvmTagEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

type lvRow struct {
	Name   string `json:"lv_name"`
	Size   string `json:"lv_size"`
	Attr   string `json:"lv_attr"`
	Path   string `json:"lv_path"`
	DMPath string `json:"lv_dm_path"`
	Tags   string `json:"lv_tags"`
}

type vgRow struct {
	Name       string `json:"vg_name"`
	Free       string `json:"vg_free"`
	ExtentSize string `json:"vg_extent_size"`
}

// lvmReport is the shape of `--reportformat json` output.
type lvmReport struct {
	Report []struct {
		LV []lvRow `json:"lv"`
		VG []vgRow `json:"vg"`
	} `json:"report"`
}

func (b *LVMBackend) lvs(ctx context.Context, target string) ([]lvRow, error) {
	out, err := b.run(ctx, "lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", lvFields, target)
	if err != nil {
		return nil, err
	}
	rep, err := parseReport(out, "lvs")
	if err != nil {
		return nil, err
	}
	var rows []lvRow
	for _, r := range rep.Report {
		rows = append(rows, r.LV...)
	}
	return rows, nil
}

type vgInfo struct{ free, extent int64 }

func (b *LVMBackend) vgInfo(ctx context.Context) (vgInfo, error) {
	if err := ValidateVGName(b.vg); err != nil {
		return vgInfo{}, fmt.Errorf("%w: %w", ErrBackendUnavailable, err)
	}
	out, err := b.run(ctx, "vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", vgFields, b.vg)
	if err != nil {
		return vgInfo{}, err
	}
	rep, err := parseReport(out, "vgs")
	if err != nil {
		return vgInfo{}, err
	}
	for _, r := range rep.Report {
		for _, row := range r.VG {
			if row.Name != b.vg {
				continue
			}
			var vg vgInfo
			if vg.free, err = parseBytes("vg_free", row.Free); err != nil {
				return vgInfo{}, err
			}
			if vg.extent, err = parseBytes("vg_extent_size", row.ExtentSize); err != nil {
				return vgInfo{}, err
			}
			if vg.extent <= 0 {
				return vgInfo{}, fmt.Errorf("vgs reported extent size %d for %s", vg.extent, b.vg)
			}
			b.extent.Store(vg.extent)
			return vg, nil
		}
	}
	return vgInfo{}, fmt.Errorf("%w: vgs did not report volume group %q", ErrBackendUnavailable, b.vg)
}

func parseReport(out []byte, cmd string) (lvmReport, error) {
	var rep lvmReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return rep, fmt.Errorf("parse %s JSON report: %w", cmd, err)
	}
	return rep, nil
}

func parseBytes(field, s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("lvm reported %s %q, want a byte count", field, s)
	}
	return n, nil
}

func parseLV(r lvRow) (lvInfo, error) {
	size, err := parseBytes("lv_size", r.Size)
	if err != nil {
		return lvInfo{}, err
	}
	lv := lvInfo{name: r.Name, path: r.Path, dmPath: r.DMPath, attr: r.Attr, size: size,
		meta: map[string]string{}, tagsFor: map[string][]string{}}
	// lv_attr's fifth character is the state: 'a' is active.
	lv.active = len(r.Attr) >= 5 && r.Attr[4] == 'a'
	if r.Tags == "" {
		return lv, nil
	}
	// Tags are comma separated; a comma is not a valid tag character.
	for _, t := range strings.Split(r.Tags, ",") {
		if t == lvmOwnerTag {
			lv.owned = true
			continue
		}
		k, v, ok := decodeMetaTag(t)
		if !ok {
			continue
		}
		lv.meta[k] = v
		lv.tagsFor[k] = append(lv.tagsFor[k], t)
	}
	return lv, nil
}

// encodeMetaTags turns metadata into tags, sorted by key.
func encodeMetaTags(meta map[string]string) ([]string, error) {
	tags := make([]string, 0, len(meta))
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		t, err := encodeMetaTag(k, meta[k])
		if err != nil {
			return nil, err
		}
		tags = append(tags, t)
	}
	return tags, nil
}

func encodeMetaTag(key, value string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty metadata key", ErrInvalidArgument)
	}
	t := lvmMetaTagPrefix + lvmTagEncoding.EncodeToString([]byte(key)) + "." + lvmTagEncoding.EncodeToString([]byte(value))
	if len(t) > lvmMaxTagLen {
		return "", fmt.Errorf("%w: metadata %q is too long: its LVM tag would be %d characters, at most %d",
			ErrInvalidArgument, key, len(t), lvmMaxTagLen)
	}
	return t, nil
}

func decodeMetaTag(t string) (key, value string, ok bool) {
	rest, found := strings.CutPrefix(t, lvmMetaTagPrefix)
	if !found {
		return "", "", false
	}
	ek, ev, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	k, err := lvmTagEncoding.DecodeString(ek)
	if err != nil || len(k) == 0 {
		return "", "", false
	}
	v, err := lvmTagEncoding.DecodeString(ev)
	if err != nil {
		return "", "", false
	}
	return string(k), string(v), true
}

var lvmNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)

// lvmReservedLV lists the substrings lvm2 refuses inside an LV name.
var lvmReservedLV = []string{"_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare",
	"_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}

// ValidateVGName checks a volume group name against LVM's rules.
func ValidateVGName(vg string) error {
	switch {
	case vg == "":
		return errors.New("volume group name is empty")
	case vg == "." || vg == ".." || !lvmNameRE.MatchString(vg):
		return fmt.Errorf("volume group name %q is invalid: use A-Z a-z 0-9 + _ . - and do not start with -", vg)
	case len(vg) > 127:
		return fmt.Errorf("volume group name %q is longer than 127 characters", vg)
	}
	return nil
}

// ValidateLVName checks that name can be an LV in vg: LVM's character set,
// no leading hyphen, none of the reserved prefixes and substrings, and
// "VG/LV" no longer than lvm2 accepts.
func ValidateLVName(vg, name string) error {
	switch {
	case name == "":
		return errors.New("logical volume name is empty")
	case name == "." || name == ".." || !lvmNameRE.MatchString(name):
		return fmt.Errorf("logical volume name %q is invalid: use A-Z a-z 0-9 + _ . - and do not start with -", name)
	case strings.HasPrefix(name, "snapshot") || strings.HasPrefix(name, "pvmove"):
		return fmt.Errorf("logical volume name %q starts with a prefix LVM reserves (snapshot, pvmove)", name)
	case len(vg)+1+len(name) > lvmMaxFullName:
		return fmt.Errorf("logical volume name %q is too long for volume group %q (VG/LV at most %d characters)",
			name, vg, lvmMaxFullName)
	}
	if i := slices.IndexFunc(lvmReservedLV, func(s string) bool { return strings.Contains(name, s) }); i >= 0 {
		return fmt.Errorf("logical volume name %q contains %q, which LVM reserves", name, lvmReservedLV[i])
	}
	return nil
}

// LVMCommandError is a failed lvm command with its exit code and stderr.
// It unwraps to the backend sentinel its message maps to, if any.
type LVMCommandError struct {
	Command  string
	Args     []string
	ExitCode int // -1 when the command did not exit (not found, killed)
	Stderr   string
	Err      error
	kind     error
}

func (e *LVMCommandError) Error() string {
	msg := fmt.Sprintf("%s %s: %v", e.Command, strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap lets errors.Is see the mapped sentinel and the underlying error.
func (e *LVMCommandError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.Err}
	}
	return []error{e.kind, e.Err}
}

var (
	lvmVGNotFoundRE = regexp.MustCompile(`Volume group "[^"]*" not found`)
	lvmLVNotFoundRE = regexp.MustCompile(`Failed to find logical volume "|Logical volume \S+ not found in volume group`)
	lvmExistsRE     = regexp.MustCompile(`Logical [Vv]olume "[^"]*" already exists in volume group`)
	lvmInUseRE      = regexp.MustCompile(`Logical volume \S+ (contains a filesystem in use|is used by another device|in use)\.`)
	lvmNoSpaceRE    = regexp.MustCompile(`(?i)insufficient free space`)
)

// classifyLVM maps lvm2's messages (LC_ALL=C) to the backend's sentinels.
func classifyLVM(err error, stderr string) error {
	switch {
	case errors.Is(err, exec.ErrExecutableNotFound), lvmVGNotFoundRE.MatchString(stderr):
		return ErrBackendUnavailable
	case lvmNoSpaceRE.MatchString(stderr):
		return ErrNoSpace
	case lvmLVNotFoundRE.MatchString(stderr):
		return ErrVolumeNotFound
	case lvmExistsRE.MatchString(stderr):
		return errLVExists
	case lvmInUseRE.MatchString(stderr):
		return ErrVolumeInUse
	}
	return nil
}

// run runs one lvm command and returns its stdout.
func (b *LVMBackend) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := b.runner.CommandContext(ctx, name, args...)
	cmd.SetEnv(b.env)
	var stdout, stderr bytes.Buffer
	cmd.SetStdout(&stdout)
	cmd.SetStderr(&stderr)
	klog.V(5).InfoS("running lvm command", "command", name, "args", args)
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("%w (%w)", ctxErr, err)
	}
	lines := []string{}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	e := &LVMCommandError{Command: name, Args: args, ExitCode: -1, Stderr: strings.Join(lines, "; "), Err: err}
	var exitErr exec.ExitError
	if errors.As(err, &exitErr) {
		e.ExitCode = exitErr.ExitStatus()
	}
	e.kind = classifyLVM(err, stderr.String())
	return stdout.Bytes(), e
}
