package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/untorn/untorn/internal/testutil"
)

// Environment of the fault-injection test.
const (
	// envFaultKills sets how many times the plugin is killed (default 30).
	envFaultKills = "UNTORN_FAULT_KILLS"
	// envFaultSeed replays a run: the seed is logged at its start.
	envFaultSeed = "UNTORN_FAULT_SEED"

	defaultFaultKills = 30
	// faultRetries bounds the attempts of an RPC after a kill; a volume
	// that does not stage within them counts as unstageable.
	faultRetries = 6
	// maxKillDelay bounds the random delays before a kill.
	maxKillDelay = 200 * time.Millisecond
	// survivorWait is how long the processes of a killed group get to die
	// (one stuck in an uninterruptible call dies when the call returns).
	survivorWait = 15 * time.Second
)

// faultRun is one fault-injection run: the plugin in use, the volumes and
// the counts.
type faultRun struct {
	t       *testing.T
	bin     string
	dir     string
	loopDir string
	rng     *rand.Rand
	p       *plugin
	vols    []*faultVolume
	serial  int
	lastDur map[string]time.Duration

	kills, killsInRPC, killsDuringMkfs int
	reformatted                        map[string]bool
	bytesLost                          int64
	unstageable                        int
	survivors                          int
	stuck                              []string
	images                             []string
}

// TestFaultInjection kills the plugin's whole process group (the plugin
// and whatever mkfs, losetup, wipefs, mount or blkid it runs) with SIGKILL
// at random points of CreateVolume, NodeStageVolume (also while mkfs
// runs), NodeExpandVolume and DeleteVolume, restarts it on the same
// state, and repeats each call until it succeeds. Volumes hold files
// written and fsynced before each kill. Nothing may be reformatted or
// lost, every volume must stage again, no child may outlive the kill, and
// cleanup must leave no loop device and no mount.
func TestFaultInjection(t *testing.T) {
	testutil.RequireRoot(t)
	kills := defaultFaultKills
	if s := os.Getenv(envFaultKills); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of kills", envFaultKills, s)
		}
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envFaultSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want an unsigned number", envFaultSeed, s)
		}
		seed = n
	}
	t.Logf("%s=%d %s=%d", envFaultKills, kills, envFaultSeed, seed)

	dir := t.TempDir()
	for _, d := range []string{"loop", "state", "shim"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &faultRun{t: t, dir: dir, loopDir: filepath.Join(dir, "loop"), rng: rand.New(rand.NewPCG(seed, seed^0x5eed)),
		lastDur: map[string]time.Duration{}, reformatted: map[string]bool{}}
	t.Cleanup(f.release)
	f.bin = buildPlugin(t, dir)
	f.p = startPlugin(t, f.bin, dir)
	start := time.Now()

	// Two volumes live through the whole run, staged and published, and
	// are checked after every restart; one more is created, staged,
	// restaged, expanded and deleted in each round.
	xfs := map[string]string{"fsType": "xfs"}
	ext4 := map[string]string{"fsType": "ext4", "atomicPolicy": "prefer"}
	for _, params := range []map[string]string{xfs, ext4} {
		v := f.newVolume(params)
		f.create(v)
		f.stage(v)
	}
	for round := 0; f.kills < kills; round++ {
		params := xfs
		if round%3 == 2 {
			params = ext4
		}
		v := f.newVolume(params)
		f.create(v)
		if f.kills < kills {
			f.stage(v)
		}
		if w := f.pick(""); w != nil && f.kills < kills {
			f.restage(w)
		}
		// XFS only: ext4 grows online only with CAP_SYS_RESOURCE, which
		// containers often drop.
		if w := f.pick("xfs"); w != nil && f.kills < kills {
			f.expand(w)
		}
		if f.kills < kills {
			f.delete(v)
		}
	}

	// Cleanup through the plugin, without kills.
	for _, v := range append([]*faultVolume{}, f.vols...) {
		f.checkData(v, "before cleanup")
		f.unstage(v)
		f.deleteNoKill(v)
	}
	leftLoop := loopDevicesUnder(resolvePath(f.loopDir))
	for _, img := range f.images {
		out, err := testutil.Output("losetup", "--associated", img)
		if err != nil {
			t.Errorf("losetup --associated %s: %v %s", img, err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if dev, _, ok := strings.Cut(l, ":"); ok && !contains(leftLoop, dev) {
				leftLoop = append(leftLoop, dev)
			}
		}
	}
	leftMounts, err := mountsUnder(resolvePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	leftFiles := f.leftoverFiles()
	f.p.kill9(t)

	t.Logf("kills=%d reformatted_after_data=%d bytes_lost=%d unstageable=%d leftover_loop_devices=%d leftover_mounts=%d",
		f.kills, len(f.reformatted), f.bytesLost, f.unstageable, len(leftLoop), len(leftMounts))
	t.Logf("kills_inside_rpc=%d kills_during_mkfs=%d surviving_children=%d calls_never_succeeding=%d leftover_files=%d volumes=%d elapsed=%s",
		f.killsInRPC, f.killsDuringMkfs, f.survivors, len(f.stuck), len(leftFiles), f.serial, time.Since(start).Round(time.Second))
	if f.kills < kills {
		t.Errorf("%d kills, want %d", f.kills, kills)
	}
	if len(f.reformatted) > 0 {
		t.Errorf("volumes reformatted after they held data: %v", keys(f.reformatted))
	}
	if f.bytesLost > 0 {
		t.Errorf("%d bytes of fsynced files lost", f.bytesLost)
	}
	if f.unstageable > 0 {
		t.Errorf("%d volumes stayed unstageable", f.unstageable)
	}
	if f.survivors > 0 {
		t.Errorf("%d children of the plugin outlived a kill of its process group", f.survivors)
	}
	if len(f.stuck) > 0 {
		t.Errorf("calls that never succeeded after a kill: %v", f.stuck)
	}
	if len(leftLoop) > 0 {
		t.Errorf("loop devices left on images in %s: %v", f.loopDir, leftLoop)
	}
	if len(leftMounts) > 0 {
		t.Errorf("mounts left under %s: %v", dir, leftMounts)
	}
	if len(leftFiles) > 0 {
		t.Errorf("files left by the plugin after every volume was deleted: %v", leftFiles)
	}
	if f.kills >= defaultFaultKills && (f.killsInRPC == 0 || f.killsDuringMkfs == 0) {
		t.Errorf("no kill hit a call in flight (%d) or a running mkfs (%d): the injection missed", f.killsInRPC, f.killsDuringMkfs)
	}
}

// trigger says when to kill: delay after the call starts, or, with mkfs,
// delay after a mkfs.* child of the plugin appears.
type trigger struct {
	mkfs  bool
	delay time.Duration
}

type rpcCall func(ctx context.Context, conn *grpc.ClientConn) error

// callWithKill starts call and kills the plugin's process group when trig
// says (at once when the call returns first, so every call costs a kill),
// checks that no child outlives the kill, and restarts the plugin.
func (f *faultRun) callWithKill(name string, trig trigger, call rpcCall) {
	f.t.Helper()
	p := f.p
	w := newWatcher(p.cmd.Process.Pid)
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- call(context.Background(), p.conn) }()
	var at time.Time
	if !trig.mkfs {
		at = started.Add(trig.delay)
	}
	returned, inMkfs := false, false
	var callErr error
	for {
		procs := w.scan()
		_, inMkfs = findMkfs(procs)
		if trig.mkfs && at.IsZero() && inMkfs {
			at = time.Now().Add(trig.delay)
		}
		if !returned {
			select {
			case callErr = <-done:
				returned = true
			default:
			}
		}
		if returned && (at.IsZero() || time.Now().Before(at)) {
			at = time.Now() // the call ended first: kill the idle plugin
		}
		if at.IsZero() && time.Since(started) > 3*time.Minute {
			at = time.Now() // no mkfs came and the call hangs: kill anyway
		}
		if !at.IsZero() && !time.Now().Before(at) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !returned {
		select {
		case callErr = <-done:
			returned = true
		default:
		}
	}
	_, inMkfs = findMkfs(w.scan())
	p.kill9(f.t)
	f.kills++
	if !returned {
		callErr = <-done
		// A call that still succeeded had finished before the kill.
		returned = callErr == nil
	}
	if !returned {
		f.killsInRPC++
	}
	if inMkfs {
		f.killsDuringMkfs++
	}
	f.t.Logf("kill %d: %s %s after %s (in flight %v, mkfs running %v): %v",
		f.kills, name, trigName(trig), time.Since(started).Round(time.Millisecond), !returned, inMkfs, callErr)
	for _, s := range survivors(w, p.cmd.Process.Pid, f.bin, survivorWait) {
		f.survivors++
		f.t.Errorf("after kill %d: %s survived the kill of the plugin's process group", f.kills, s)
		killSurvivor(s)
	}
	f.p = startPlugin(f.t, f.bin, f.dir)
	f.checkAll(fmt.Sprintf("after kill %d", f.kills))
}

func trigName(trig trigger) string {
	if trig.mkfs {
		return fmt.Sprintf("(%s after mkfs started)", trig.delay)
	}
	return fmt.Sprintf("(%s after the call)", trig.delay)
}

// retry repeats call until it succeeds (faultRetries attempts); it
// remembers how long a successful call took, to aim the next kill.
func (f *faultRun) retry(name string, call rpcCall) error {
	var err error
	for i := 0; i < faultRetries; i++ {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		err = call(ctx, f.p.conn)
		cancel()
		if err == nil {
			f.lastDur[name] = time.Since(start)
			return nil
		}
		f.t.Logf("%s attempt %d: %v", name, i+1, err)
	}
	return err
}

// mustRetry is retry for calls that must succeed; a failure is counted.
func (f *faultRun) mustRetry(name string, call rpcCall) bool {
	if err := f.retry(name, call); err != nil {
		f.stuck = append(f.stuck, fmt.Sprintf("%s: %v", name, err))
		f.t.Errorf("%s failed %d times after a kill: %v", name, faultRetries, err)
		return false
	}
	return true
}

// timed picks a random delay within the time the call last took (so most
// kills land inside it), at most maxKillDelay.
func (f *faultRun) timed(name string) trigger {
	bound := maxKillDelay
	if d, ok := f.lastDur[name]; ok {
		bound = min(max(d*6/5, 2*time.Millisecond), maxKillDelay)
	}
	return trigger{delay: time.Duration(f.rng.Int64N(int64(bound)))}
}

// duringMkfs picks a delay after mkfs starts: within the first 20 ms (the
// window in which an interrupted mkfs.xfs leaves a half-written
// superblock) until a kill has hit a running mkfs and then every other
// time, the others anywhere up to maxKillDelay.
func (f *faultRun) duringMkfs() trigger {
	bound := maxKillDelay
	if f.killsDuringMkfs%2 == 0 {
		bound = 20 * time.Millisecond
	}
	return trigger{mkfs: true, delay: time.Duration(f.rng.Int64N(int64(bound)))}
}

// release undoes what a failed run left: mounts under the test's
// directory, loop devices on its images, processes of the plugin.
func (f *faultRun) release() {
	if f.p != nil && f.p.cmd.ProcessState == nil {
		f.p.kill9(f.t)
	}
	mps, _ := mountsUnder(resolvePath(f.dir))
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		testutil.Output("umount", "-l", mp)
	}
	for _, dev := range loopDevicesUnder(resolvePath(f.loopDir)) {
		testutil.Output("losetup", "-d", dev)
	}
}

// leftoverFiles lists what is left in the loop directory and the node
// state after every volume was deleted and unstaged.
func (f *faultRun) leftoverFiles() []string {
	var out []string
	for _, d := range []string{f.loopDir, filepath.Join(f.dir, "state", "staged")} {
		ents, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			f.t.Error(err)
		}
		for _, e := range ents {
			out = append(out, filepath.Join(d, e.Name()))
		}
	}
	return out
}

func resolvePath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
