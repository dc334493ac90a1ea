package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/utils/exec"
	fakeexec "k8s.io/utils/exec/testing"
)

// The lvm outputs below are recordings of lvm2 2.03 (testdata/lvm/record.sh).
const (
	lvmID1       = "uv-0123456789abcdef0123456789abcdef"
	lvmID2       = "uv-fedcba9876543210fedcba9876543210"
	lvmMissingID = "uv-00000000000000000000000000000000"
	lvmDM1       = "/dev/mapper/vg0-uv--0123456789abcdef0123456789abcdef"
	lvmTestLVF   = "lv_name,lv_size,lv_attr,lv_path,lv_dm_path,lv_tags"
	lvmTestVGF   = "vg_name,vg_size,vg_free,vg_extent_size"
)

func lvmLvsArgs(target string) []string {
	return []string{"lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", lvmTestLVF, target}
}

func lvmVgsArgs(vg string) []string {
	return []string{"vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", lvmTestVGF, vg}
}

// lvmStep is one expected command and the recording it answers with.
type lvmStep struct {
	argv []string
	rec  string              // testdata/lvm/<rec>.{out,txt,rc}
	edit func(string) string // changes the recorded stdout
	err  error               // returned instead of the recording (e.g. not installed)
}

// lvmActive and lvmInactive turn the recorded state "X" (no device-mapper where it
// was recorded) into what lvs prints for an active or inactive LV.
func lvmActive(s string) string   { return strings.ReplaceAll(s, `"-wi-XX----"`, `"-wi-a-----"`) }
func lvmInactive(s string) string { return strings.ReplaceAll(s, `"-wi-XX----"`, `"-wi-------"`) }

func lvmResized(size int64) func(string) string {
	return func(s string) string {
		return strings.Replace(s, `"lv_size":"8388608"`, `"lv_size":"`+strconv.FormatInt(size, 10)+`"`, 1)
	}
}

func readLVMRec(t *testing.T, name, ext string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "lvm", name+"."+ext))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scriptLVM returns a FakeExec that expects exactly steps, in order, and
// checks each command's arguments and environment.
func scriptLVM(t *testing.T, steps []lvmStep) *fakeexec.FakeExec {
	t.Helper()
	fe := &fakeexec.FakeExec{}
	for i, st := range steps {
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) exec.Cmd {
			got := append([]string{cmd}, args...)
			if !slices.Equal(got, st.argv) {
				t.Errorf("command %d:\n got %q\nwant %q", i, got, st.argv)
			}
			fc := &fakeexec.FakeCmd{}
			fc.RunScript = []fakeexec.FakeAction{func() ([]byte, []byte, error) {
				checkLVMEnv(t, fc.Env)
				if st.err != nil {
					return nil, nil, st.err
				}
				out := readLVMRec(t, st.rec, "out")
				if st.edit != nil {
					out = []byte(st.edit(string(out)))
				}
				rc, err := strconv.Atoi(strings.TrimSpace(string(readLVMRec(t, st.rec, "rc"))))
				if err != nil {
					t.Fatalf("recording %s: exit code: %v", st.rec, err)
				}
				var runErr error
				if rc != 0 {
					runErr = fakeexec.FakeExitError{Status: rc}
				}
				return out, readLVMRec(t, st.rec, "txt"), runErr
			}}
			return fakeexec.InitFakeCmd(fc, cmd, args...)
		})
	}
	t.Cleanup(func() {
		if fe.CommandCalls != len(steps) {
			t.Errorf("ran %d commands, want %d", fe.CommandCalls, len(steps))
		}
	})
	return fe
}

func checkLVMEnv(t *testing.T, env []string) {
	t.Helper()
	if len(env) < 2 || env[len(env)-2] != "LC_ALL=C" || env[len(env)-1] != "LVM_SUPPRESS_FD_WARNINGS=1" {
		t.Errorf("environment does not end in LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1: %q", env)
	}
	for _, kv := range env[:len(env)-2] {
		if strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			t.Errorf("locale variable %q reaches lvm", kv)
		}
	}
}

var lvmCreateArgs = []string{"lvcreate", "--yes", "--type", "linear", "-n", lvmID1, "-L", "8388608b", "-W", "y", "-Z", "y",
	"--addtag", "untorn.csi.dev", "--addtag", "untorn.m.MZZVI6LQMU.PBTHG", "--addtag", "untorn.m.NZQW2ZI.OB3GGLJR", "vg0"}

var lvmTestMeta = map[string]string{"name": "pvc-1", "fsType": "xfs"}

var lvmVol1 = BackendVolume{ID: lvmID1, SizeBytes: 8 << 20, Meta: lvmTestMeta}

func TestLVMCreate(t *testing.T) {
	tests := []struct {
		name    string
		vg, id  string
		size    int64
		meta    map[string]string
		steps   []lvmStep
		want    BackendVolume
		wantErr error
	}{
		{name: "new", id: lvmID1, size: 8 << 20, meta: lvmTestMeta, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
			{argv: lvmCreateArgs, rec: "lvcreate"},
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmActive},
		}, want: BackendVolume{ID: lvmID1, SizeBytes: 8 << 20, Device: lvmDM1, Meta: lvmTestMeta}},
		{name: "existing is returned unchanged", id: lvmID1, size: 16 << 20, meta: map[string]string{"name": "other"}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		}, want: lvmVol1},
		{name: "created concurrently", id: lvmID1, size: 8 << 20, meta: lvmTestMeta, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
			{argv: lvmCreateArgs, rec: "lvcreate-exists"},
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		}, want: lvmVol1},
		{name: "no space", id: lvmID1, size: 8 << 20, meta: lvmTestMeta, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
			{argv: lvmCreateArgs, rec: "lvcreate-nospace"},
		}, wantErr: ErrNoSpace},
		{name: "volume group missing", vg: "vg1", id: lvmID1, size: 8 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg1/" + lvmID1), rec: "lvs-vg-missing"},
		}, wantErr: ErrBackendUnavailable},
		{name: "lvm not installed", id: lvmID1, size: 8 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), err: exec.ErrExecutableNotFound},
		}, wantErr: ErrBackendUnavailable},
		{name: "LV of that name not created by untorn", id: "root", size: 8 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/root"), rec: "lvs-foreign"},
		}, wantErr: ErrAlreadyExists},
		{name: "invalid name", id: "../x", size: 8 << 20, wantErr: ErrInvalidArgument},
		{name: "reserved prefix", id: "snapshot1", size: 8 << 20, wantErr: ErrInvalidArgument},
		{name: "reserved substring", id: "a_tmeta", size: 8 << 20, wantErr: ErrInvalidArgument},
		{name: "zero size", id: lvmID1, wantErr: ErrInvalidArgument},
		{name: "metadata too long for a tag", id: lvmID1, size: 8 << 20,
			meta: map[string]string{"k": strings.Repeat("v", 700)}, wantErr: ErrInvalidArgument},
		{name: "empty metadata key", id: lvmID1, size: 8 << 20, meta: map[string]string{"": "v"}, wantErr: ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vg := tt.vg
			if vg == "" {
				vg = "vg0"
			}
			b := NewLVMBackend(vg, scriptLVM(t, tt.steps))
			got, err := b.Create(context.Background(), tt.id, tt.size, tt.meta)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Create error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != ErrVolumeNotFound && errors.Is(err, ErrVolumeNotFound) {
				t.Errorf("Create error %v also wraps ErrVolumeNotFound, which the RPC boundary maps first", err)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Create = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLVMDelete(t *testing.T) {
	tests := []struct {
		name    string
		vg, id  string
		steps   []lvmStep
		wantErr error
	}{
		{name: "existing", id: lvmID1, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: []string{"lvremove", "-y", "vg0/" + lvmID1}, rec: "lvremove"},
		}},
		{name: "missing", id: lvmID1, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
		}},
		{name: "removed concurrently", id: lvmID1, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: []string{"lvremove", "-y", "vg0/" + lvmID1}, rec: "lvremove-missing"},
		}},
		{name: "in use", id: lvmID1, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmActive},
			{argv: []string{"lvremove", "-y", "vg0/" + lvmID1}, rec: "lvremove-in-use"},
		}, wantErr: ErrVolumeInUse},
		{name: "not created by untorn is left alone", id: "root", steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/root"), rec: "lvs-foreign"},
		}},
		{name: "ID that cannot be an LV", id: "a/b"},
		{name: "volume group missing", vg: "vg1", id: lvmID1, steps: []lvmStep{
			{argv: lvmLvsArgs("vg1/" + lvmID1), rec: "lvs-vg-missing"},
		}, wantErr: ErrBackendUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vg := tt.vg
			if vg == "" {
				vg = "vg0"
			}
			err := NewLVMBackend(vg, scriptLVM(t, tt.steps)).Delete(context.Background(), tt.id)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Delete error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestLVMExpand(t *testing.T) {
	extend := []string{"lvextend", "-L", "16777216b", "vg0/" + lvmID1}
	tests := []struct {
		name     string
		id       string
		size     int64
		steps    []lvmStep
		wantSize int64
		wantErr  error
	}{
		{name: "grows", id: lvmID1, size: 16 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: extend, rec: "lvextend"},
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmResized(16 << 20)},
		}, wantSize: 16 << 20},
		{name: "already large enough", id: lvmID1, size: 4 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		}, wantSize: 8 << 20},
		{name: "no space", id: lvmID1, size: 16 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: extend, rec: "lvextend-nospace"},
		}, wantErr: ErrNoSpace},
		{name: "missing", id: lvmID1, size: 16 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"},
		}, wantErr: ErrVolumeNotFound},
		{name: "removed concurrently", id: lvmID1, size: 16 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: extend, rec: "lvextend-missing"},
		}, wantErr: ErrVolumeNotFound},
		{name: "not created by untorn", id: "root", size: 16 << 20, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/root"), rec: "lvs-foreign"},
		}, wantErr: ErrVolumeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewLVMBackend("vg0", scriptLVM(t, tt.steps)).Expand(context.Background(), tt.id, tt.size)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Expand error %v, want %v", err, tt.wantErr)
			}
			if err == nil && got.SizeBytes != tt.wantSize {
				t.Errorf("Expand size %d, want %d", got.SizeBytes, tt.wantSize)
			}
		})
	}
}

func TestLVMCheckCapacityAllocationUnit(t *testing.T) {
	ctx := context.Background()
	b := NewLVMBackend("vg0", scriptLVM(t, []lvmStep{
		{argv: lvmVgsArgs("vg0"), rec: "vgs", edit: func(s string) string {
			return strings.Replace(s, `"vg_extent_size":"4194304"`, `"vg_extent_size":"33554432"`, 1)
		}},
		{argv: lvmVgsArgs("vg0"), rec: "vgs"},
	}))
	if got := b.AllocationUnit(); got != 4<<20 {
		t.Errorf("AllocationUnit before vgs = %d, want LVM's default %d", got, 4<<20)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := b.AllocationUnit(); got != 32<<20 {
		t.Errorf("AllocationUnit = %d, want the VG's extent size %d", got, 32<<20)
	}
	free, err := b.Capacity(ctx)
	if err != nil || free != 1052770304 {
		t.Errorf("Capacity = %d, %v; want vg_free 1052770304", free, err)
	}
}

func TestLVMCheckUnavailable(t *testing.T) {
	tests := []struct {
		name     string
		vg       string
		steps    []lvmStep
		wantExit int
	}{
		{name: "volume group missing", vg: "vg1", steps: []lvmStep{{argv: lvmVgsArgs("vg1"), rec: "vg-missing"}}, wantExit: 5},
		{name: "lvm not installed", vg: "vg0", steps: []lvmStep{{argv: lvmVgsArgs("vg0"), err: exec.ErrExecutableNotFound}}, wantExit: -1},
		{name: "invalid volume group name", vg: "-vg"},
		{name: "vgs reports nothing", vg: "vg0", steps: []lvmStep{{argv: lvmVgsArgs("vg0"), rec: "vgs-empty",
			edit: func(s string) string { return strings.Replace(s, `"vg_name":"vg0"`, `"vg_name":"other"`, 1) }}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewLVMBackend(tt.vg, scriptLVM(t, tt.steps)).Check(context.Background())
			if !errors.Is(err, ErrBackendUnavailable) {
				t.Fatalf("Check error %v, want ErrBackendUnavailable", err)
			}
			var ce *LVMCommandError
			if tt.wantExit != 0 && (!errors.As(err, &ce) || ce.ExitCode != tt.wantExit) {
				t.Errorf("Check error %#v, want an LVMCommandError with exit code %d", err, tt.wantExit)
			}
		})
	}
}

func TestLVMList(t *testing.T) {
	b := NewLVMBackend("vg0", scriptLVM(t, []lvmStep{{argv: lvmLvsArgs("vg0"), rec: "lvs-all", edit: lvmActive}}))
	got, err := b.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []BackendVolume{
		{ID: lvmID1, SizeBytes: 8 << 20, Device: lvmDM1, Meta: lvmTestMeta},
		{ID: lvmID2, SizeBytes: 4 << 20, Device: "/dev/mapper/vg0-uv--fedcba9876543210fedcba9876543210", Meta: map[string]string{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %+v\nwant %+v (the LV without the owner tag left out)", got, want)
	}

	b = NewLVMBackend("vg1", scriptLVM(t, []lvmStep{{argv: lvmLvsArgs("vg1"), rec: "lvs-vg-missing"}}))
	if _, err := b.List(context.Background()); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("List on a missing VG: %v, want ErrBackendUnavailable", err)
	}
}

func TestLVMGet(t *testing.T) {
	tests := []struct {
		name    string
		id      string
		steps   []lvmStep
		want    BackendVolume
		wantErr error
	}{
		{name: "inactive has no device", id: lvmID1, steps: []lvmStep{{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmInactive}}, want: lvmVol1},
		{name: "missing", id: lvmID1, steps: []lvmStep{{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"}}, wantErr: ErrVolumeNotFound},
		{name: "not created by untorn", id: "root", steps: []lvmStep{{argv: lvmLvsArgs("vg0/root"), rec: "lvs-foreign"}}, wantErr: ErrVolumeNotFound},
		{name: "ID that cannot be an LV", id: "..", wantErr: ErrVolumeNotFound},
		{name: "garbled report", id: lvmID1, steps: []lvmStep{{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one",
			edit: func(s string) string { return strings.Replace(s, `"lv_size":"8388608"`, `"lv_size":"8.00m"`, 1) }}}, wantErr: errLVMAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewLVMBackend("vg0", scriptLVM(t, tt.steps)).Get(context.Background(), tt.id)
			if tt.wantErr == errLVMAny {
				if err == nil {
					t.Fatal("Get succeeded, want an error")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Get error %v, want %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Get = %+v, want %+v", got, tt.want)
			}
		})
	}
}

var errLVMAny = errors.New("any error")

func TestLVMAttach(t *testing.T) {
	activate := []string{"lvchange", "-ay", "vg0/" + lvmID1}
	tests := []struct {
		name    string
		steps   []lvmStep
		wantErr error
	}{
		{name: "active", steps: []lvmStep{{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmActive}}},
		{name: "inactive is activated", steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmInactive},
			{argv: activate, rec: "lvchange-tags"},
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmActive},
		}},
		{name: "activation without effect", steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmInactive},
			{argv: activate, rec: "lvchange-tags"},
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one", edit: lvmInactive},
		}, wantErr: errLVMAny},
		{name: "missing", steps: []lvmStep{{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-missing"}}, wantErr: ErrVolumeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, err := NewLVMBackend("vg0", scriptLVM(t, tt.steps)).Attach(context.Background(), lvmID1)
			switch {
			case tt.wantErr == errLVMAny && err != nil:
			case tt.wantErr == nil && err == nil:
				if dev != lvmDM1 {
					t.Errorf("Attach = %q, want %q", dev, lvmDM1)
				}
			case tt.wantErr != nil && errors.Is(err, tt.wantErr):
			default:
				t.Fatalf("Attach error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestLVMSetMeta(t *testing.T) {
	tests := []struct {
		name  string
		meta  map[string]string
		steps []lvmStep
	}{
		{name: "replaces one key", meta: map[string]string{"fsType": "ext4", "name": "pvc-1"}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: []string{"lvchange", "--deltag", "untorn.m.MZZVI6LQMU.PBTHG", "--addtag", "untorn.m.MZZVI6LQMU.MV4HINA",
				"vg0/" + lvmID1}, rec: "lvchange-tags"},
		}},
		{name: "adds a key", meta: map[string]string{"atomicWriteUnit": "16384"}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: []string{"lvchange", "--addtag", "untorn.m.MF2G63LJMNLXE2LUMVKW42LU.GE3DGOBU",
				"vg0/" + lvmID1}, rec: "lvchange-tags"},
		}},
		{name: "unchanged runs nothing", meta: map[string]string{"name": "pvc-1"}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		}},
		{name: "an empty value removes the key", meta: map[string]string{"fsType": ""}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
			{argv: []string{"lvchange", "--deltag", "untorn.m.MZZVI6LQMU.PBTHG", "vg0/" + lvmID1}, rec: "lvchange-tags"},
		}},
		{name: "removing an absent key runs nothing", meta: map[string]string{"verifyFailed": ""}, steps: []lvmStep{
			{argv: lvmLvsArgs("vg0/" + lvmID1), rec: "lvs-one"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := NewLVMBackend("vg0", scriptLVM(t, tt.steps)).SetMeta(context.Background(), lvmID1, tt.meta); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLVMMetaTagRoundTrip(t *testing.T) {
	for _, kv := range [][2]string{
		{"name", "pvc-1"},
		{"csi.storage.k8s.io/pvc/name", "data, with commas = and spaces"},
		{"empty", ""},
		{"unicode", "größe 16Ki ✓"},
	} {
		tag, err := encodeMetaTag(kv[0], kv[1])
		if err != nil {
			t.Fatalf("encode %q: %v", kv, err)
		}
		if !lvmTagRE.MatchString(tag) {
			t.Errorf("tag %q for %q has characters LVM refuses", tag, kv)
		}
		k, v, ok := decodeMetaTag(tag)
		if !ok || k != kv[0] || v != kv[1] {
			t.Errorf("decode(%q) = %q, %q, %v; want %q", tag, k, v, ok, kv)
		}
	}
	for _, tag := range []string{"os", "untorn.m.", "untorn.m.NZQW2ZI", "untorn.m.1.A", "untorn.m..OB3GGLJR"} {
		if k, v, ok := decodeMetaTag(tag); ok {
			t.Errorf("decode(%q) = %q, %q; want not a metadata tag", tag, k, v)
		}
	}
}

// lvmTagRE is lvm2's tag character set.
var lvmTagRE = regexp.MustCompile(`^[A-Za-z0-9_+.\-/=!:&#]+$`)

func TestValidateLVName(t *testing.T) {
	for _, tt := range []struct {
		vg, name string
		ok       bool
	}{
		{"vg0", lvmID1, true},
		{"vg0", "a+b_c.d-e", true},
		{"vg0", strings.Repeat("a", 121), true},
		{"vg0", strings.Repeat("a", 122), false},
		{"vg0", "", false},
		{"vg0", ".", false},
		{"vg0", "..", false},
		{"vg0", "-a", false},
		{"vg0", "a/b", false},
		{"vg0", "a b", false},
		{"vg0", "pvmove0", false},
		{"vg0", "snapshot", false},
		{"vg0", "x_rimage_0", false},
		{"vg0", "x_pmspare", false},
	} {
		if err := ValidateLVName(tt.vg, tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateLVName(%q, %q) = %v, want ok=%v", tt.vg, tt.name, err, tt.ok)
		}
	}
	for _, vg := range []string{"", ".", "-vg", "vg/0", strings.Repeat("v", 128)} {
		if ValidateVGName(vg) == nil {
			t.Errorf("ValidateVGName(%q) accepted", vg)
		}
	}
}

// lvmMissingTools runs every command under a name no binary has, as on a
// node without lvm2.
type lvmMissingTools struct{ exec.Interface }

func (m lvmMissingTools) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	return m.Interface.CommandContext(ctx, "untorn-test-missing-"+cmd, args...)
}

func TestLVMNotInstalled(t *testing.T) {
	ctx := context.Background()
	b := NewLVMBackend("vg0", lvmMissingTools{exec.New()})
	if err := b.Check(ctx); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("Check without lvm2: %v, want ErrBackendUnavailable", err)
	}
	if _, err := b.Create(ctx, lvmID1, 8<<20, nil); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("Create without lvm2: %v, want ErrBackendUnavailable", err)
	}
}
