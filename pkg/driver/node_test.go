package driver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	untorn "github.com/untorn/untorn/pkg/atomic"
)

// step is one scripted command: its exit status and stdout.
type step struct {
	status int
	stdout string
}

// scriptRun scripts the commands the driver runs (through Run), in order,
// and returns the log of their argument vectors.
func scriptRun(e *fakeEnv, steps ...step) *[][]string {
	var argv [][]string
	for _, st := range steps {
		act := func() ([]byte, []byte, error) {
			if st.status != 0 {
				return []byte(st.stdout), nil, &testingexec.FakeExitError{Status: st.status}
			}
			return []byte(st.stdout), nil, nil
		}
		cmd := &testingexec.FakeCmd{RunScript: []testingexec.FakeAction{act}}
		e.exec.CommandScript = append(e.exec.CommandScript, func(name string, args ...string) exec.Cmd {
			argv = append(argv, append([]string{name}, args...))
			return testingexec.InitFakeCmd(cmd, name, args...)
		})
	}
	return &argv
}

// scriptFormat scripts what staging a blank volume runs: wipefs, then mkfs.
func scriptFormat(e *fakeEnv) *[][]string { return scriptRun(e, step{}, step{}) }

func createVol(t *testing.T, e *fakeEnv, params map[string]string) string {
	t.Helper()
	r, err := e.d.CreateVolume(context.Background(), createReq("vol", 1<<30, params))
	if err != nil {
		t.Fatal(err)
	}
	return r.GetVolume().GetVolumeId()
}

func TestNodeStageFormatsVerifiesAndRecords(t *testing.T) {
	e := newFakeDriver(t)
	e.atomic.verify = untorn.Verification{Atomic: true, UnitMin: 4096, UnitMax: 1 << 20, Unit: 16384}
	id := createVol(t, e, map[string]string{"fsType": "xfs"})
	staging := filepath.Join(e.dir, "staging")
	argv := scriptFormat(e)
	req := &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}
	if _, err := e.d.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"wipefs", "-a", "/dev/fake0"},
		{"mkfs.xfs", "-b", "size=4096", "-m", "reflink=1", "-d", "cowextsize=1", "-f", "/dev/fake0"}}
	if !slices.EqualFunc(*argv, want, slices.Equal) {
		t.Errorf("commands %q, want %q", *argv, want)
	}
	if ok, _ := e.mounter.IsMountPoint(staging); !ok {
		t.Error("staging path not mounted")
	}
	if want := []string{staging + "=4096"}; !slices.Equal(e.atomic.cowHints, want) {
		t.Errorf("copy-on-write hints %q, want %q", e.atomic.cowHints, want)
	}
	vol, _ := e.backend.Get(context.Background(), id)
	if vol.Meta[metaVerifiedAtomic] != "true" || vol.Meta[metaVerifiedUnitMax] != "1048576" {
		t.Errorf("verified limits not stored: %v", vol.Meta)
	}
	if _, ok, _ := e.d.state.get(id); !ok {
		t.Error("no staging record")
	}
	// Again: already mounted from the same device, nothing runs.
	if _, err := e.d.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if e.exec.CommandCalls != 2 || e.atomic.verified != 1 {
		t.Errorf("repeated stage ran %d commands, %d verifications", e.exec.CommandCalls, e.atomic.verified)
	}
	// Unstage twice: idempotent, record gone.
	for i := 0; i < 2; i++ {
		if _, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := e.d.state.get(id); ok {
		t.Error("staging record left after unstage")
	}
}

func TestNodeStageCodes(t *testing.T) {
	tests := []struct {
		name    string
		params  map[string]string
		verify  untorn.Verification
		req     func(id, staging string) *csi.NodeStageVolumeRequest
		scripts bool
		want    codes.Code
	}{
		{"no volume id", nil, untorn.Verification{}, func(_, s string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
		}, false, codes.InvalidArgument},
		{"no staging path", nil, untorn.Verification{}, func(id, _ string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: id, VolumeCapability: mountCap(snw, "")}
		}, false, codes.InvalidArgument},
		{"relative staging path", nil, untorn.Verification{}, func(id, _ string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: "rel/dir", VolumeCapability: mountCap(snw, "")}
		}, false, codes.InvalidArgument},
		{"no capability", nil, untorn.Verification{}, func(id, s string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s}
		}, false, codes.InvalidArgument},
		{"fsType differs", map[string]string{"fsType": "xfs"}, untorn.Verification{}, func(id, s string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: mountCap(snw, "ext4")}
		}, false, codes.InvalidArgument},
		{"unknown volume", nil, untorn.Verification{}, func(_, s string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: "uv-00000000000000000000000000000000", StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
		}, false, codes.NotFound},
		{"foreign id", nil, untorn.Verification{}, func(_, s string) *csi.NodeStageVolumeRequest {
			return &csi.NodeStageVolumeRequest{VolumeId: "../x", StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
		}, false, codes.NotFound},
		// ext4 needs hardware atomics: the plan fails before anything runs.
		{"ext4 require without hardware", map[string]string{"fsType": "ext4", "atomicPolicy": "require"}, untorn.Verification{},
			func(id, s string) *csi.NodeStageVolumeRequest {
				return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
			}, false, codes.FailedPrecondition},
		{"block require without hardware", map[string]string{"atomicPolicy": "require"}, untorn.Verification{},
			func(id, s string) *csi.NodeStageVolumeRequest {
				return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: blockCap(snw)}
			}, false, codes.FailedPrecondition},
		{"block prefer without hardware", map[string]string{"atomicPolicy": "prefer"}, untorn.Verification{},
			func(id, s string) *csi.NodeStageVolumeRequest {
				return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: blockCap(snw)}
			}, false, codes.OK},
		{"xfs require verification fails", map[string]string{"fsType": "xfs"}, untorn.Verification{Reason: "statx says no"},
			func(id, s string) *csi.NodeStageVolumeRequest {
				return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
			}, true, codes.FailedPrecondition},
		{"xfs prefer verification fails", map[string]string{"fsType": "xfs", "atomicPolicy": "prefer"}, untorn.Verification{Reason: "statx says no"},
			func(id, s string) *csi.NodeStageVolumeRequest {
				return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: s, VolumeCapability: mountCap(snw, "")}
			}, true, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeDriver(t)
			e.atomic.verify = tc.verify
			id := createVol(t, e, tc.params)
			staging := filepath.Join(e.dir, "staging")
			if tc.scripts {
				scriptFormat(e)
			}
			_, err := e.d.NodeStageVolume(context.Background(), tc.req(id, staging))
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			if !tc.scripts && e.exec.CommandCalls != 0 {
				t.Errorf("%d commands ran", e.exec.CommandCalls)
			}
			if tc.want == codes.FailedPrecondition {
				if ok, _ := e.mounter.IsMountPoint(staging); ok {
					t.Error("left mounted after a refused stage")
				}
			}
		})
	}
}

// TestNodeInFlight: a call on a volume with an operation under way is
// refused at once (Aborted) and does nothing; another volume stages
// meanwhile; once the operation ends, the volume stages.
func TestNodeInFlight(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	e.atomic.verify = untorn.Verification{Atomic: true, UnitMin: 4096, UnitMax: 1 << 20, Unit: 16384}
	id := createVol(t, e, map[string]string{"fsType": "xfs"})
	r, err := e.d.CreateVolume(ctx, createReq("other", 1<<30, map[string]string{"fsType": "xfs"}))
	if err != nil {
		t.Fatal(err)
	}
	other := r.GetVolume().GetVolumeId()
	e.backend.devices = map[string]string{other: "/dev/fake1"}
	stage := func(id, staging string) error {
		_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id,
			StagingTargetPath: filepath.Join(e.dir, staging), VolumeCapability: mountCap(snw, "")})
		return err
	}
	release, err := e.d.inflight.acquire(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := stage(id, "s"); status.Code(err) != codes.Aborted {
		t.Fatalf("code %v, want Aborted (%v)", status.Code(err), err)
	}
	if e.exec.CommandCalls != 0 || len(e.mounts.calls) != 0 {
		t.Fatalf("a refused call ran %d commands and %d mounts", e.exec.CommandCalls, len(e.mounts.calls))
	}
	// Another volume is not blocked: it is formatted, mounted and recorded.
	scriptFormat(e)
	if err := stage(other, "o"); err != nil {
		t.Fatalf("other volume: %v", err)
	}
	if ok, _ := e.mounter.IsMountPoint(filepath.Join(e.dir, "o")); !ok {
		t.Error("other volume not mounted")
	}
	if _, ok, _ := e.d.state.get(other); !ok {
		t.Error("other volume not recorded")
	}
	release()
	scriptFormat(e)
	if err := stage(id, "s"); err != nil {
		t.Fatalf("after the operation ended: %v", err)
	}
}

func TestNodePublishCodes(t *testing.T) {
	e := newFakeDriver(t)
	id := createVol(t, e, nil)
	staging := filepath.Join(e.dir, "staging")
	if err := os.MkdirAll(filepath.Join(e.dir, "shim", "glibc"), 0o755); err != nil {
		t.Fatal(err)
	}
	shim := map[string]string{contextEphemeral: "true", contextType: typeShim}
	tests := []struct {
		name string
		req  *csi.NodePublishVolumeRequest
		want codes.Code
	}{
		{"no id", &csi.NodePublishVolumeRequest{TargetPath: e.dir + "/t0", StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}, codes.InvalidArgument},
		{"no target", &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}, codes.InvalidArgument},
		{"no staging", &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: e.dir + "/t1", VolumeCapability: mountCap(snw, "")}, codes.InvalidArgument},
		{"no capability", &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: e.dir + "/t2", StagingTargetPath: staging}, codes.InvalidArgument},
		{"not staged", &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: e.dir + "/t3", StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}, codes.FailedPrecondition},
		{"block not staged", &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: e.dir + "/t4", StagingTargetPath: staging, VolumeCapability: blockCap(snw)}, codes.FailedPrecondition},
		{"unknown volume", &csi.NodePublishVolumeRequest{VolumeId: "uv-00000000000000000000000000000000", TargetPath: e.dir + "/t5", StagingTargetPath: staging, VolumeCapability: mountCap(snw, "")}, codes.NotFound},
		{"ephemeral other type", &csi.NodePublishVolumeRequest{VolumeId: "csi-abc", TargetPath: e.dir + "/t6", VolumeCapability: mountCap(snw, ""),
			VolumeContext: map[string]string{contextEphemeral: "true", contextType: "scratch"}}, codes.InvalidArgument},
		{"ephemeral no type", &csi.NodePublishVolumeRequest{VolumeId: "csi-abc", TargetPath: e.dir + "/t7", VolumeCapability: mountCap(snw, ""),
			VolumeContext: map[string]string{contextEphemeral: "true"}}, codes.InvalidArgument},
		{"ephemeral block", &csi.NodePublishVolumeRequest{VolumeId: "csi-abc", TargetPath: e.dir + "/t8", VolumeCapability: blockCap(snw), VolumeContext: shim}, codes.InvalidArgument},
		{"ephemeral shim", &csi.NodePublishVolumeRequest{VolumeId: "csi-abc", TargetPath: e.dir + "/t9", VolumeCapability: mountCap(snw, ""), VolumeContext: shim}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.d.NodePublishVolume(context.Background(), tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
	// The shim is bound read-only from --shim-dir; unpublish removes it.
	mps, _ := e.mounter.List()
	i := slices.IndexFunc(mps, func(m mount.MountPoint) bool { return m.Path == e.dir+"/t9" })
	if i < 0 || !slices.Contains(mps[i].Opts, "ro") || mps[i].Device != e.dir+"/shim" {
		t.Fatalf("shim mount %v", mps)
	}
	if _, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-abc", TargetPath: e.dir + "/t9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.dir + "/t9"); !os.IsNotExist(err) {
		t.Errorf("target left behind: %v", err)
	}
}

func TestNodeOtherCodes(t *testing.T) {
	e := newFakeDriver(t)
	ctx := context.Background()
	id := createVol(t, e, nil)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unpublish no id", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{TargetPath: e.dir + "/x"})
			return err
		}, codes.InvalidArgument},
		{"unpublish no target", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"unpublish missing target", func() error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: e.dir + "/never"})
			return err
		}, codes.OK},
		{"unstage no id", func() error {
			_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{StagingTargetPath: e.dir + "/s"})
			return err
		}, codes.InvalidArgument},
		{"unstage no path", func() error {
			_, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"stats no id", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumePath: e.dir})
			return err
		}, codes.InvalidArgument},
		{"stats no path", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"stats unknown volume", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "uv-00000000000000000000000000000000", VolumePath: e.dir})
			return err
		}, codes.NotFound},
		{"stats missing path", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: e.dir + "/nope"})
			return err
		}, codes.NotFound},
		{"stats of a path the volume is not at", func() error {
			_, err := e.d.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: "/etc"})
			return err
		}, codes.NotFound},
		{"health no id", func() error {
			_, err := e.d.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{})
			return err
		}, codes.InvalidArgument},
		{"health not staged but path given", func() error {
			r, err := e.d.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: e.dir + "/pub"})
			if err == nil && len(r.GetVolumeHealth().GetHealthStatuses()) != 1 {
				t.Errorf("health %v", r.GetVolumeHealth())
			}
			return err
		}, codes.OK},
		{"expand no path", func() error {
			_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"expand unknown", func() error {
			_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "uv-00000000000000000000000000000000", VolumePath: e.dir})
			return err
		}, codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}
}
