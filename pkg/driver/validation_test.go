package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// badParameters has, for every StorageClass parameter, values that must be
// refused; the test checks the error names the parameter.
var badParameters = []struct {
	params map[string]string
	names  string // the parameter the error must name
}{
	{map[string]string{"fsType": "btrfs"}, "fsType"},
	{map[string]string{"fsType": ""}, "fsType"},
	{map[string]string{"fsType": "ext3"}, "fsType"},
	{map[string]string{"atomicWriteUnit": "12Ki"}, "atomicWriteUnit"},
	{map[string]string{"atomicWriteUnit": "2Ki"}, "atomicWriteUnit"},
	{map[string]string{"atomicWriteUnit": "4Mi"}, "atomicWriteUnit"},
	{map[string]string{"atomicWriteUnit": "-16Ki"}, "atomicWriteUnit"},
	{map[string]string{"atomicWriteUnit": "lots"}, "atomicWriteUnit"},
	{map[string]string{"atomicWriteUnit": ""}, "atomicWriteUnit"},
	{map[string]string{"clusterSize": "3Mi"}, "clusterSize"},
	{map[string]string{"clusterSize": "1Gi"}, "clusterSize"},
	{map[string]string{"clusterSize": "8Ki", "atomicWriteUnit": "16Ki"}, "clusterSize"},
	{map[string]string{"clusterSize": "64Ki", "fsType": "xfs"}, "clusterSize"},
	{map[string]string{"clusterSize": "x"}, "clusterSize"},
	{map[string]string{"atomicPolicy": "always"}, "atomicPolicy"},
	{map[string]string{"atomicPolicy": "Require"}, "atomicPolicy"},
	{map[string]string{"atomicPolicy": ""}, "atomicPolicy"},
	{map[string]string{"blockSize": "4096"}, "blockSize"},
	{map[string]string{"mkfsOptions": "-O ^has_journal"}, "mkfsOptions"},
}

func TestValidateCreateParametersRejects(t *testing.T) {
	for _, tc := range badParameters {
		t.Run(fmt.Sprint(tc.params), func(t *testing.T) {
			_, err := ValidateCreateParameters(tc.params)
			if !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("error %v, want ErrInvalidParameter", err)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name %s", err, tc.names)
			}
			if codeOf(err) != codes.InvalidArgument {
				t.Errorf("code %v", codeOf(err))
			}
		})
	}
}

func TestValidateCreateParametersNormalises(t *testing.T) {
	tests := []struct {
		in   map[string]string
		want map[string]string
	}{
		{nil, map[string]string{"fsType": "ext4", "atomicWriteUnit": "16384", "atomicPolicy": "require"}},
		{map[string]string{"fsType": "xfs", "atomicWriteUnit": "8Ki", "atomicPolicy": "prefer", "csi.storage.k8s.io/pvc/name": "x"},
			map[string]string{"fsType": "xfs", "atomicWriteUnit": "8192", "atomicPolicy": "prefer"}},
		{map[string]string{"clusterSize": "64Ki", "atomicWriteUnit": "16384"},
			map[string]string{"fsType": "ext4", "atomicWriteUnit": "16384", "atomicPolicy": "require", "clusterSize": "65536"}},
	}
	for _, tc := range tests {
		got, err := ValidateCreateParameters(tc.in)
		if err != nil {
			t.Fatalf("%v: %v", tc.in, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%v: got %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestVolumeIDs(t *testing.T) {
	if id := volumeIDForName("pvc-1"); !validVolumeID(id) || id != volumeIDForName("pvc-1") || id == volumeIDForName("pvc-2") {
		t.Fatalf("volume IDs not stable and distinct: %s", id)
	}
	for _, bad := range []string{"", "uv-", "../uv-00000000000000000000000000000000", "uv-0000000000000000000000000000000/",
		"uv-000000000000000000000000000000000", "UV-00000000000000000000000000000000", "uv-0000000000000000000000000000000G"} {
		if validVolumeID(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{"", "..", "a/b", "a..b", ".hidden", strings.Repeat("a", 129)} {
		if validToken(bad) {
			t.Errorf("token %q accepted", bad)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", ErrInvalidParameter), codes.InvalidArgument},
		{fmt.Errorf("x: %w", ErrVolumeNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", ErrBackendUnavailable), codes.Unavailable},
		{fmt.Errorf("x: %w", ErrInFlight), codes.Aborted},
		{fmt.Errorf("x: %w", ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", ErrOutOfRange), codes.OutOfRange},
		{fmt.Errorf("x: %w: %w", ErrAtomicUnavailable, untorn.ErrNoHardware), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", untorn.ErrMisaligned), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", ErrVolumeInUse), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{mount.NewMountError(mount.FilesystemMismatch, "xfs vs ext4"), codes.FailedPrecondition},
		{mount.NewMountError(mount.FormatFailed, "mkfs died"), codes.Internal},
		{errors.New("plain"), codes.Internal},
		{status.Error(codes.Unimplemented, "kept"), codes.Unimplemented},
	}
	for _, tc := range tests {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := Options{Mode: ModeAll, Endpoint: "unix:///run/csi.sock", NodeID: "n1", Backend: "loop", LoopDir: "/var/lib/untorn/loop",
		SysfsRoot: "/sys", StateDir: "/var/lib/untorn", ShimDir: "/usr/lib/untorn/shim"}
	tests := []struct {
		name string
		mod  func(o *Options)
		ok   bool
	}{
		{"good", func(*Options) {}, true},
		{"lvm", func(o *Options) { o.Backend, o.VolumeGroup = "lvm", "vg0" }, true},
		{"controller needs no state dir", func(o *Options) { o.Mode, o.StateDir = ModeController, "" }, true},
		{"controller needs no backend", func(o *Options) { o.Mode, o.Backend, o.LoopDir = ModeController, "", "" }, true},
		{"mode", func(o *Options) { o.Mode = "both" }, false},
		{"tcp endpoint", func(o *Options) { o.Endpoint = "tcp://0.0.0.0:10000" }, false},
		{"relative socket", func(o *Options) { o.Endpoint = "unix://csi.sock" }, false},
		{"no node id", func(o *Options) { o.NodeID = "" }, false},
		{"bad node id", func(o *Options) { o.NodeID = "a/b" }, false},
		{"backend", func(o *Options) { o.Backend = "zfs" }, false},
		{"lvm without vg", func(o *Options) { o.Backend = "lvm" }, false},
		{"lvm vg with a slash", func(o *Options) { o.Backend, o.VolumeGroup = "lvm", "vg/x" }, false},
		{"lvm vg with a leading hyphen", func(o *Options) { o.Backend, o.VolumeGroup = "lvm", "-vg" }, false},
		{"relative loop dir", func(o *Options) { o.LoopDir = "loop" }, false},
		{"metrics address", func(o *Options) { o.MetricsAddress = "9808" }, false},
		{"metrics ok", func(o *Options) { o.MetricsAddress = ":9808" }, true},
	}
	for _, tc := range tests {
		o := good
		tc.mod(&o)
		err := o.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidOption)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
