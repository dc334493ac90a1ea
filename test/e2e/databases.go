package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sameVersion: the server's version is the image tag's version (tag 18 and
// version 18.6, tag 11.8 and version 11.8.9-MariaDB-...).
func sameVersion(version, tag string) bool {
	return version == tag || strings.HasPrefix(version, tag+".") || strings.HasPrefix(version, tag+"-")
}

// majorVersion is the number before the first dot of a version (-1 when
// there is none).
func majorVersion(v string) int {
	n, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		return -1
	}
	return n
}

// imageTag is the tag of the image of a pod's container.
func (e *env) imageTag(ctx context.Context, pod, container string) (string, error) {
	p, err := e.pod(ctx, pod)
	if err != nil {
		return "", err
	}
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			return c.Image[strings.LastIndex(c.Image, ":")+1:], nil
		}
	}
	return "", fail("pod %s has no container %s", pod, container)
}

// statefulSet is the first StatefulSet of the namespace whose name contains
// word (case-insensitive).
func (e *env) statefulSet(ctx context.Context, word string) (string, error) {
	l, err := e.cs.AppsV1().StatefulSets(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for _, s := range l.Items {
		if strings.Contains(strings.ToLower(s.Name), word) {
			return s.Name, nil
		}
	}
	return "", nil
}

// dbPod applies an example, waits for its StatefulSet (the one whose name
// contains word) and returns its first pod and that pod's first container.
func (e *env) dbPod(ctx context.Context, file, word, what string, filter func(*appsv1.StatefulSet)) (pod, container string, err error) {
	if _, err := os.Stat(file); err != nil {
		return "", "", fail("%s does not exist", file)
	}
	if err := e.applyExample(ctx, file, filter); err != nil {
		return "", "", err
	}
	sts, err := e.statefulSet(ctx, word)
	if err != nil {
		return "", "", err
	}
	if sts == "" {
		return "", "", fail("no %s StatefulSet in %s", what, file)
	}
	if err := e.waitRollout(ctx, sts, 300*time.Second); err != nil {
		return "", "", fail("statefulset.apps/%s did not become ready: %v", sts, err)
	}
	pod = sts + "-0"
	p, err := e.pod(ctx, pod)
	if err != nil {
		return "", "", err
	}
	return pod, p.Spec.Containers[0].Name, nil
}

// pgDB is the PostgreSQL example's server.
type pgDB struct {
	e              *env
	pod, container string
}

// query runs a query with psql and returns its unaligned output.
func (db pgDB) query(ctx context.Context, q string) (string, error) {
	return db.e.output(ctx, db.pod, db.container, "psql", "-U", "postgres", "-tAq", "-c", q)
}

var untornLog = regexp.MustCompile(`untorn:`)

// pgExampleUp applies the PostgreSQL example (through filter), waits until
// it is ready and checks what every PostgreSQL version must show: the shim
// injected, the server of the image's version, full_page_writes off,
// io_method worker where it exists (18+).
func (e *env) pgExampleUp(ctx context.Context, file string, filter func(*appsv1.StatefulSet)) (pgDB, error) {
	pod, c, err := e.dbPod(ctx, file, "postgres", "PostgreSQL", filter)
	if err != nil {
		return pgDB{}, err
	}
	db := pgDB{e, pod, c}
	fmt.Printf("pod %s container %s; volumes:\n", pod, c)
	l, err := e.cs.CoreV1().PersistentVolumeClaims(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return db, err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tCLASS\tVOLUME\tSIZE")
	for _, v := range l.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", v.Name, deref(v.Spec.StorageClassName), v.Spec.VolumeName, quantity(v.Status.Capacity))
	}
	w.Flush()
	if err := e.shimInjected(ctx, pod, c); err != nil {
		return db, err
	}
	ver, err := db.query(ctx, "SHOW server_version")
	if err != nil {
		return db, err
	}
	tag, err := e.imageTag(ctx, pod, c)
	if err != nil {
		return db, err
	}
	fmt.Printf("server_version %s (image tag %s)\n", ver, tag)
	if !sameVersion(strings.SplitN(ver, " ", 2)[0], tag) {
		return db, fail("PostgreSQL %s runs, the image tag says %s", ver, tag)
	}
	fpw, err := db.query(ctx, "SHOW full_page_writes")
	if err != nil {
		return db, err
	}
	fmt.Printf("full_page_writes=%s\n", fpw)
	if fpw != "off" {
		return db, fail("full_page_writes is '%s', want off (the container's log says why: %s)", fpw, e.logLines(ctx, pod, c, untornLog))
	}
	if majorVersion(ver) >= 18 {
		iom, err := db.query(ctx, "SHOW io_method")
		if err != nil {
			return db, err
		}
		fmt.Printf("io_method=%s\n", iom)
		if iom != "worker" {
			return db, fail("io_method is '%s', want worker (the example's)", iom)
		}
	}
	if out, err := e.output(ctx, pod, c, "cat", "/proc/mounts"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " /var/lib/postgresql") || strings.Contains(l, " /pgwal") || strings.Contains(l, " pg_wal") {
				fmt.Println(l)
			}
		}
	}
	return db, nil
}

// pageWrites makes PostgreSQL write pages and checks in the shim's counters
// that they went atomic.
func (db pgDB) pageWrites(ctx context.Context) error {
	return db.e.pageWritesAtomic(ctx, db.pod, db.container, "PostgreSQL", regexp.MustCompile(`/postgres$`), func() error {
		_, err := db.query(ctx, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0; CHECKPOINT")
		return err
	})
}

// 4. The example PostgreSQL StatefulSet (PostgreSQL 18) with the injected
// shim: pgbench, atomic page writes, data kept across a pod restart.
func checkPostgres(ctx context.Context, e *env) error {
	db, err := e.pgExampleUp(ctx, e.cfg.pgManifest, nil)
	if err != nil {
		return err
	}
	if err := e.show(ctx, db.pod, db.container, "pgbench", "-U", "postgres", "-i", "-s", "4", "-q", "postgres"); err != nil {
		return fail("pgbench -i: %v", err)
	}
	out, err := e.output(ctx, db.pod, db.container, "pgbench", "-U", "postgres", "-c", "4", "-j", "2", "-T", "20", "postgres")
	fmt.Println(lastLines(out, 6))
	if err != nil {
		return fail("pgbench: %v", err)
	}
	if err := db.pageWrites(ctx); err != nil {
		return err
	}

	rows, err := db.query(ctx, "SELECT count(*) FROM pgbench_accounts")
	if err != nil {
		return err
	}
	if _, err := db.query(ctx, "CREATE TABLE IF NOT EXISTS e2e_marker(v text); INSERT INTO e2e_marker VALUES ('survives')"); err != nil {
		return err
	}
	p, err := e.pod(ctx, db.pod)
	if err != nil {
		return err
	}
	uid := p.UID
	vol, err := e.claimVolumes(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("before restart: %s rows in pgbench_accounts, volumes %s\n", rows, vol)
	if err := e.deleteAndWait(ctx, "pod", db.pod, 120*time.Second); err != nil {
		return err
	}
	if poll(ctx, 240*time.Second, "pod "+db.pod+" to come back", func() bool {
		p, err := e.pod(ctx, db.pod)
		return err == nil && p.UID != uid && isReady(p)
	}) != nil {
		return fail("pod %s did not come back Ready", db.pod)
	}
	if poll(ctx, 60*time.Second, "PostgreSQL to accept queries", func() bool {
		_, err := db.query(ctx, "SELECT 1")
		return err == nil
	}) != nil {
		return fail("PostgreSQL does not answer after the restart")
	}
	rows2, err := db.query(ctx, "SELECT count(*) FROM pgbench_accounts")
	if err != nil {
		return err
	}
	vol2, err := e.claimVolumes(ctx)
	if err != nil {
		return err
	}
	marker, err := db.query(ctx, "SELECT v FROM e2e_marker")
	if err != nil {
		return err
	}
	fmt.Printf("after restart: %s rows, marker '%s', volumes %s\n", rows2, marker, vol2)
	if rows2 != rows {
		return fail("row count changed across the restart: %s -> %s", rows, rows2)
	}
	if marker != "survives" {
		return fail("the marker row is gone after the restart")
	}
	if vol2 != vol {
		return fail("the pod came back on other volumes: %s -> %s", vol, vol2)
	}
	return nil
}

// 4c. PostgreSQL 15 (Debian 12's), the oldest version untorn supports: the
// same example on the postgres:15 image, without io_method (15 does not know
// it), in a namespace of its own that is deleted afterwards: shim injected,
// full_page_writes off, page writes atomic.
func checkPostgres15(ctx context.Context, parent *env) (err error) {
	ns := parent.ns + "-pg15"
	if err := parent.createNamespace(ctx, ns); err != nil {
		return err
	}
	e := parent.inNamespace(ns)
	// on the way out (pass or fail): the evidence of this namespace when it
	// failed, then the namespace with its volumes
	defer func() {
		if err != nil {
			banner("evidence for namespace %s", ns)
			e.checkEvidence(ctx)
		}
		if derr := parent.deleteNamespace(ctx, ns, 180*time.Second); derr != nil {
			logf("namespace %s: %v", ns, derr)
		}
	}()
	db, err := e.pgExampleUp(ctx, e.cfg.pgManifest, postgres15(e.cfg.postgres15Image))
	if err != nil {
		return err
	}
	if tag, err := e.imageTag(ctx, db.pod, db.container); err != nil || tag != "15" {
		return fail("the pod does not run the PostgreSQL 15 image")
	}
	if err := e.show(ctx, db.pod, db.container, "pgbench", "-U", "postgres", "-i", "-s", "2", "-q", "postgres"); err != nil {
		return fail("pgbench -i: %v", err)
	}
	return db.pageWrites(ctx)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
