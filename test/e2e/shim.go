package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// shimInjected checks that LD_PRELOAD is set in the container's main
// process and that the shim volume holding the library is mounted
// read-only.
func (e *env) shimInjected(ctx context.Context, pod, container string) error {
	p, err := e.pod(ctx, pod)
	if err != nil {
		return err
	}
	cid := ""
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			cid = s.ContainerID
		}
	}
	if i := strings.Index(cid, "://"); i >= 0 {
		cid = cid[i+3:]
	}
	// the container's main process, read from the host: the containers
	// drop every capability, so an exec'd shell may not read its environ
	pid, err := taskPID(ctx, cid)
	if err != nil {
		return err
	}
	if pid == "" {
		return fail("no running task for container %s of %s/%s", cid, pod, container)
	}
	environ, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		return fail("environment of %s/%s: %v", pod, container, err)
	}
	preload := envValue(environ, "LD_PRELOAD")
	if preload == "" {
		return fail("LD_PRELOAD is not set in %s/%s (webhook did not inject the shim)", pod, container)
	}
	fmt.Printf("LD_PRELOAD=%s\n", preload)
	mounts, err := e.output(ctx, pod, container, "cat", "/proc/mounts")
	if err != nil {
		return err
	}
	held := mountsHolding(mounts, preload)
	fmt.Printf("shim mount: %s\n", orNoneMount(held))
	if len(held) == 0 {
		return fail("no mount holds %s in %s/%s", preload, pod, container)
	}
	if !anyReadOnly(held) {
		return fail("the shim volume at %s is not read-only: %s", path.Dir(preload), strings.Join(held, "\n"))
	}
	if _, err := e.output(ctx, pod, container, "sh", "-c", `test -r "$1"`, "sh", preload); err != nil {
		return fail("%s is not readable", preload)
	}
	return nil
}

// taskPID is the host PID of the running containerd task of container id
// cid ("" when there is none).
func taskPID(ctx context.Context, cid string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr", "-n", "k8s.io", "task", "ls").Output()
	if err != nil {
		return "", fmt.Errorf("ctr task ls: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && cid != "" && f[0] == cid {
			return f[1], nil
		}
	}
	return "", nil
}

// envValue is the value of name in a NUL-separated environment block.
func envValue(environ []byte, name string) string {
	v := ""
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if k, val, ok := strings.Cut(string(kv), "="); ok && k == name {
			v = val
		}
	}
	return v
}

// mountsHolding is the lines of a /proc/mounts whose mount point is a
// prefix of file (the root excepted).
func mountsHolding(mounts, file string) []string {
	var held []string
	for _, l := range strings.Split(mounts, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[1] != "/" && strings.HasPrefix(file, f[1]) {
			held = append(held, l)
		}
	}
	return held
}

// anyReadOnly: one of the /proc/mounts lines has the ro option.
func anyReadOnly(lines []string) bool {
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 4 && slices.Contains(strings.Split(f[3], ","), "ro") {
			return true
		}
	}
	return false
}

func orNoneMount(lines []string) string {
	if len(lines) == 0 {
		return "<none>"
	}
	return strings.Join(lines, "\n")
}

// shimCounts is the shim's counters that the checks look at.
type shimCounts struct {
	AtomicWrites   uint64            `json:"atomic_writes"`
	AtomicBytes    uint64            `json:"atomic_bytes"`
	UringAtomic    uint64            `json:"uring_atomic"`
	AioAtomic      uint64            `json:"aio_atomic"`
	WriteErrors    uint64            `json:"write_errors"`
	StrictFailures uint64            `json:"strict_failures"`
	Passthrough    map[string]uint64 `json:"passthrough"`
}

func (s *shimCounts) add(o shimCounts) {
	s.AtomicWrites += o.AtomicWrites
	s.AtomicBytes += o.AtomicBytes
	s.UringAtomic += o.UringAtomic
	s.AioAtomic += o.AioAtomic
	s.WriteErrors += o.WriteErrors
	s.StrictFailures += o.StrictFailures
	if s.Passthrough == nil {
		s.Passthrough = map[string]uint64{}
	}
	for k, v := range o.Passthrough {
		s.Passthrough[k] += v
	}
}

// shimDump is one process's counters as the shim writes them.
type shimDump struct {
	PID int    `json:"pid"`
	Exe string `json:"exe"`
	Why string `json:"why"`
	shimCounts
}

// shimStats is the counters of the processes of one executable, summed.
type shimStats struct {
	Processes int `json:"processes"`
	shimCounts
}

func (s shimStats) String() string {
	js, _ := json.Marshal(s)
	return string(js)
}

// wentAtomic: the processes made atomic writes and none failed.
func (s shimStats) wentAtomic() bool {
	return s.AtomicWrites > 0 && s.WriteErrors == 0 && s.StrictFailures == 0
}

// parseDumps reads the concatenated JSON dumps of the shim.
func parseDumps(data []byte) ([]shimDump, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var ds []shimDump
	for {
		var d shimDump
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return ds, nil
		}
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
}

// sumDumps sums the counters of the processes whose executable matches exe.
func sumDumps(ds []shimDump, exe *regexp.Regexp) shimStats {
	s := shimStats{shimCounts: shimCounts{Passthrough: map[string]uint64{}}}
	for _, d := range ds {
		if exe.MatchString(d.Exe) {
			s.Processes++
			s.add(d.shimCounts)
		}
	}
	return s
}

// shimCounters asks every shimmed process of the container for a dump (the
// shim dumps on its next write after $UNTORN_STATS_DIR/dump-now changes),
// runs activity to make the database write, then sums the counters of the
// processes whose executable matches exe. The dumps are kept in the
// evidence directory as <namespace>-<pod>-stats.jsonl.
func (e *env) shimCounters(ctx context.Context, pod, container string, exe *regexp.Regexp, activity func() error) (shimStats, error) {
	if _, err := e.output(ctx, pod, container, "sh", "-c",
		`touch "${UNTORN_STATS_DIR:?UNTORN_STATS_DIR is not set}/dump-now"`); err != nil {
		return shimStats{}, err
	}
	time.Sleep(1500 * time.Millisecond)
	if err := activity(); err != nil {
		return shimStats{}, err
	}
	time.Sleep(2 * time.Second)
	out, err := e.output(ctx, pod, container, "sh", "-c", `cat "$UNTORN_STATS_DIR"/untorn-*.json`)
	if err != nil {
		return shimStats{}, err
	}
	if e.cfg.evidence != "" {
		name := fmt.Sprintf("%s-%s-stats.jsonl", e.ns, pod)
		if err := os.WriteFile(filepath.Join(e.cfg.evidence, name), []byte(out+"\n"), 0o644); err != nil {
			return shimStats{}, err
		}
	}
	ds, err := parseDumps([]byte(out))
	if err != nil {
		return shimStats{}, fmt.Errorf("the shim's dumps: %w", err)
	}
	for _, d := range ds {
		fmt.Fprintf(os.Stderr, "  pid %d %s (%s): atomic_writes %d, unaligned %d, fs_not_atomic %d\n",
			d.PID, d.Exe, d.Why, d.AtomicWrites, d.Passthrough["unaligned"], d.Passthrough["fs_not_atomic"])
	}
	return sumDumps(ds, exe), nil
}

// pageWritesAtomic runs activity (which makes the database write pages)
// and checks in the shim's counters of the processes matching exe that the
// writes went atomic, with no write error and no strict failure.
func (e *env) pageWritesAtomic(ctx context.Context, pod, container, db string, exe *regexp.Regexp, activity func() error) error {
	stats, err := e.shimCounters(ctx, pod, container, exe, activity)
	if err != nil {
		return fail("cannot read the shim counters: %v", err)
	}
	fmt.Printf("shim counters (summed over processes): %s\n", stats)
	if !stats.wentAtomic() {
		return fail("%s's page writes did not go atomic: %s", db, stats)
	}
	return nil
}
