package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	mount "k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/untorn/untorn/internal/testutil"
	untorn "github.com/untorn/untorn/pkg/atomic"
	"github.com/untorn/untorn/pkg/driver"
)

// startDriver runs the real driver in-process on the loop backend in a
// temporary directory and returns its endpoint and working directory.
// Everything it attached or mounted is released at cleanup.
func startDriver(t *testing.T, nodeID string) (endpoint, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, d := range []string{"loop", "state", "shim/glibc", "shim/musl"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	endpoint = "unix://" + filepath.Join(dir, "csi.sock")
	runner := exec.New()
	opts := driver.Options{
		Mode: driver.ModeAll, Endpoint: endpoint, NodeID: nodeID, Backend: "loop",
		LoopDir: filepath.Join(dir, "loop"), LoopReserve: 1 << 30, SysfsRoot: "/sys",
		StateDir: filepath.Join(dir, "state"), ShimDir: filepath.Join(dir, "shim"), MaxVolumes: 256,
	}
	d, err := driver.New(opts, driver.Deps{
		Backend: driver.NewLoopBackend(opts.LoopDir, opts.LoopReserve, runner),
		Mounter: mount.NewSafeFormatAndMount(mount.New(""), runner),
		Exec:    runner,
		Atomic:  driver.SysfsAtomic{Sysfs: untorn.Sysfs{Root: "/sys"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver: %v", err)
		}
		releaseAll(t, dir)
	})
	sock := filepath.Join(dir, "csi.sock")
	testutil.WaitForFile(t, sock, 5*time.Second)
	return endpoint, dir
}

// releaseAll unmounts whatever is still mounted under dir and detaches the
// loop devices of images under dir, reporting each as a leak.
func releaseAll(t *testing.T, dir string) {
	t.Helper()
	mps, err := mount.New("").List()
	if err != nil {
		t.Error(err)
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if strings.HasPrefix(mps[i].Path, dir+"/") {
			t.Errorf("leaked mount %s", mps[i].Path)
			testutil.Output("umount", "-l", mps[i].Path)
		}
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "loop", "*.img"))
	for _, img := range imgs {
		out, _ := testutil.Output("losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img)
		for _, dev := range strings.Fields(out) {
			t.Errorf("leaked loop device %s for %s", dev, img)
			testutil.Output("losetup", "-d", dev)
		}
	}
}

// TestSanity runs csi-sanity against the real driver on the loop backend
// with real mkfs and mount: once for ext4 (atomicPolicy prefer: loop
// devices have no hardware atomic writes) and once for xfs (require).
func TestSanity(t *testing.T) {
	testutil.RequireRoot(t)
	suites := []struct {
		name   string
		params map[string]string
	}{
		{"ext4-prefer", map[string]string{"fsType": "ext4", "atomicPolicy": "prefer", "atomicWriteUnit": "16Ki"}},
		{"xfs-require", map[string]string{"fsType": "xfs", "atomicPolicy": "require", "atomicWriteUnit": "16Ki"}},
	}
	var contexts []*sanity.TestContext
	for _, s := range suites {
		endpoint, dir := startDriver(t, "sanity-node")
		cfg := sanity.NewTestConfig()
		cfg.Address = endpoint
		cfg.TargetPath = filepath.Join(dir, "target")
		cfg.StagingPath = filepath.Join(dir, "staging")
		cfg.TestVolumeSize = 512 << 20
		cfg.TestVolumeExpandSize = 768 << 20
		cfg.TestVolumeParameters = s.params
		cfg.TestNodeVolumeAttachLimit = true
		cfg.IdempotentCount = 3
		ginkgo.Describe(s.name, func() { contexts = append(contexts, sanity.GinkgoTest(&cfg)) })
	}
	ginkgo.ReportAfterSuite("untorn sanity counts", func(r ginkgo.Report) {
		var passed, failed, skipped, pending int
		reasons := map[string]int{}
		for _, sr := range r.SpecReports {
			if sr.LeafNodeType != types.NodeTypeIt {
				continue
			}
			switch sr.State {
			case types.SpecStatePassed:
				passed++
			case types.SpecStatePending:
				pending++
			case types.SpecStateSkipped:
				skipped++
				reasons[strings.TrimSpace(sr.Failure.Message)]++
			default:
				failed++
			}
		}
		for reason, n := range reasons {
			t.Logf("skipped %d: %s", n, reason)
		}
		t.Logf("csi-sanity: %d passed, %d failed, %d skipped, %d pending (marked pending upstream) in %s",
			passed, failed, skipped, pending, r.RunTime.Round(time.Second))
	})
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.RunSpecs(t, "untorn CSI sanity")
	for _, sc := range contexts {
		sc.Finalize()
	}
}
