// Command untorn-e2e runs the end-to-end checks of untorn against a cluster
// that has the chart installed (hack/e2e.sh brings the cluster up, installs
// the chart and runs this inside the cluster's namespaces with its
// kubeconfig). Every check prints PASS or FAIL with its evidence; the exit
// status is 1 when any check failed.
//
//	untorn-e2e -checks "1 2 3 4 5 6" -evidence DIR ...
//	untorn-e2e -cluster-evidence     print the cluster's state and exit
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is what the harness tells the checks about the cluster.
type config struct {
	checks           string
	namespace        string // the test namespace, created here
	releaseNamespace string // where the chart runs the driver
	driver           string // the CSI driver's name
	node             string // the cluster's only node
	loopDir          string // the loop backend's backing files
	evidence         string // directory kept after the run
	image            string // the untorn image, for the test pods
	postgres15Image  string
	pgManifest       string
	mariadbManifest  string
	kubeletLog       string
	localCluster     string // hack/local-cluster.sh, for its "loops" command
	clusterEvidence  bool
}

// check is one numbered check: it returns an error naming what it saw when
// the product does not do what it should.
type check struct {
	id, title string
	run       func(context.Context, *env) error
}

// checksFor maps the numbers the harness accepts to the checks they run, in
// order.
func checksFor(id string) ([]check, error) {
	switch id {
	case "1":
		return []check{{"1", "CSIDriver, CSINode and CSIStorageCapacity", checkRegistration}}, nil
	case "2":
		return []check{{"2", "XFS volume binds and verifies atomic >= 8 KiB", checkXFSVolume}}, nil
	case "3":
		return []check{{"3", "placement by capability: hardware-only classes stay Pending, nothing carved; untorn-xfs binds", checkPlacement}}, nil
	case "4":
		return []check{
			{"4", "PostgreSQL with the shim: atomic page writes, data survives a pod restart", checkPostgres},
			{"4b", "MariaDB with the shim: atomic page writes", checkMariaDB},
			{"4c", "PostgreSQL 15 with the shim: atomic page writes", checkPostgres15},
		}, nil
	case "5":
		return []check{{"5", "online volume expansion", checkExpand}}, nil
	case "6":
		return []check{{"6", "deleting workloads and PVCs removes the volumes", checkCleanup}}, nil
	}
	return nil, fmt.Errorf("unknown check %q (known: 1 2 3 4 5 6)", id)
}

func main() {
	var cfg config
	for _, f := range []struct {
		p                  *string
		name, value, usage string
	}{
		{&cfg.checks, "checks", "1 2 3 4 5 6", "the checks to run, in order (6 cleans up after the others)"},
		{&cfg.namespace, "namespace", "untorn-e2e", "test namespace (created)"},
		{&cfg.releaseNamespace, "release-namespace", "untorn-system", "namespace of the installed chart"},
		{&cfg.driver, "driver", "untorn.csi.dev", "CSI driver name"},
		{&cfg.node, "node", "untorn-node", "node name"},
		{&cfg.loopDir, "loop-dir", "", "directory of the loop backend's backing files"},
		{&cfg.evidence, "evidence", "", "directory for evidence files and the summary"},
		{&cfg.image, "image", "ghcr.io/untorn/untorn:e2e", "untorn image for the test pods"},
		{&cfg.postgres15Image, "postgres15-image", "docker.io/library/postgres:15", "PostgreSQL 15 image (check 4c)"},
		{&cfg.pgManifest, "pg-manifest", "", "the PostgreSQL example manifest"},
		{&cfg.mariadbManifest, "mariadb-manifest", "", "the MariaDB example manifest"},
		{&cfg.kubeletLog, "kubelet-log", "", "the kubelet's log file (evidence)"},
		{&cfg.localCluster, "local-cluster", "", "hack/local-cluster.sh (lists the cluster's loop devices)"},
	} {
		flag.StringVar(f.p, f.name, f.value, f.usage)
	}
	flag.BoolVar(&cfg.clusterEvidence, "cluster-evidence", false, "print nodes, pods, events and the driver's logs, then exit")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "untorn-e2e:", err)
		os.Exit(2)
	}
	if cfg.clusterEvidence {
		e.clusterEvidence(ctx)
		return
	}
	var plan []check
	for _, id := range strings.Fields(cfg.checks) {
		cs, err := checksFor(id)
		if err != nil {
			fmt.Fprintln(os.Stderr, "untorn-e2e:", err)
			os.Exit(2)
		}
		plan = append(plan, cs...)
	}
	if err := e.createNamespace(ctx, cfg.namespace); err != nil {
		fmt.Fprintln(os.Stderr, "untorn-e2e:", err)
		os.Exit(1)
	}
	failed := false
	var summary strings.Builder
	for _, c := range plan {
		if ctx.Err() != nil {
			break
		}
		ok, secs := e.runCheck(ctx, c)
		result := "PASS"
		if !ok {
			result, failed = "FAIL", true
		}
		fmt.Fprintf(&summary, "  check %-3s %-4s %4ds  %s\n", c.id, result, secs, c.title)
		if cfg.evidence != "" {
			// written after every check, so that an interrupted run
			// still reports what ran
			_ = os.WriteFile(filepath.Join(cfg.evidence, "summary.txt"), []byte(summary.String()), 0o644)
		}
	}
	if ctx.Err() != nil {
		logf("interrupted")
		os.Exit(130)
	}
	if failed {
		os.Exit(1)
	}
}

// runCheck runs one check, prints PASS or FAIL with the evidence of a
// failure, and returns whether it passed and how long it took.
func (e *env) runCheck(ctx context.Context, c check) (ok bool, secs int) {
	banner("check %s: %s", c.id, c.title)
	t0 := time.Now()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("check panicked: %v", r)
			}
		}()
		return c.run(ctx, e)
	}()
	secs = int(time.Since(t0).Seconds())
	if err == nil {
		logf("check %s PASS (%ds): %s", c.id, secs, c.title)
		return true, secs
	}
	fmt.Printf("\n!!!!! %v\n", err)
	logf("check %s FAIL (%ds): %s", c.id, secs, c.title)
	banner("evidence for check %s", c.id)
	e.checkEvidence(ctx)
	return false, secs
}

// fail is a check's failure: a message naming what it saw.
func fail(format string, a ...any) error { return fmt.Errorf(format, a...) }

func banner(format string, a ...any) {
	fmt.Printf("\n========== %s ==========\n", fmt.Sprintf(format, a...))
}

// logf prints a time-stamped line on stderr, like the harness's log.
func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, a...))
}
