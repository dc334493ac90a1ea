package main

import (
	"context"
	"fmt"
	"regexp"
	"time"
)

// mariaDB is the MariaDB example's server.
type mariaDB struct {
	e              *env
	pod, container string
}

// query runs statements with the mariadb client as root (the password from
// the container's environment) and returns the output without headers.
func (db mariaDB) query(ctx context.Context, q string) (string, error) {
	return db.e.output(ctx, db.pod, db.container, "sh", "-c",
		`mariadb -uroot -p"${MARIADB_ROOT_PASSWORD:-$MYSQL_ROOT_PASSWORD}" -N -e "$1"`, "sh", q)
}

var innodbWritePath = regexp.MustCompile(`InnoDB: Using (io_uring|Linux native AIO)|innodb_use_native_aio`)

// 4b. The example MariaDB StatefulSet (MariaDB 11.8) with the injected shim.
func checkMariaDB(ctx context.Context, e *env) error {
	file := e.cfg.mariadbManifest
	// loop devices have no hardware atomic writes: the example's ext4 class
	// would be refused (check 3), XFS's software atomics serve instead
	fmt.Printf("running %s on untorn-xfs instead of untorn-ext4-16k (loop devices)\n", file)
	pod, c, err := e.dbPod(ctx, file, "maria", "MariaDB", classInstead("untorn-ext4-16k", "untorn-xfs"))
	if err != nil {
		return err
	}
	db := mariaDB{e, pod, c}
	if err := e.shimInjected(ctx, pod, c); err != nil {
		return err
	}
	// Ready is not always serving (an image's entrypoint may restart the
	// server after initialising it): wait for a query to succeed.
	if poll(ctx, 120*time.Second, "MariaDB to answer queries", func() bool {
		_, err := db.query(ctx, "SELECT 1")
		return err == nil
	}) != nil {
		return fail("MariaDB in %s does not answer queries", pod)
	}
	ver, err := db.query(ctx, "SELECT VERSION()")
	if err != nil {
		return err
	}
	tag, err := e.imageTag(ctx, pod, c)
	if err != nil {
		return err
	}
	fmt.Printf("version %s (image tag %s)\n", ver, tag)
	if !sameVersion(ver, tag) {
		return fail("MariaDB %s runs, the image tag says %s", ver, tag)
	}
	dw, err := db.query(ctx, "SELECT @@innodb_doublewrite")
	if err != nil {
		return err
	}
	fmt.Printf("innodb_doublewrite=%s\n", dw)
	if dw != "0" && dw != "OFF" {
		return fail("innodb_doublewrite is '%s', want OFF (the container's log says why: %s)", dw, e.logLines(ctx, pod, c, untornLog))
	}
	if l := e.logLines(ctx, pod, c, innodbWritePath); l != "" {
		fmt.Println(l)
	}
	if _, err := db.query(ctx, `CREATE DATABASE IF NOT EXISTS e2e; USE e2e; CREATE TABLE IF NOT EXISTS e2e.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB;
	    INSERT INTO e2e.t (v) SELECT REPEAT('x', 200) FROM seq_1_to_20000; SET GLOBAL innodb_max_dirty_pages_pct=0;`); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	if err := e.pageWritesAtomic(ctx, pod, c, "MariaDB", regexp.MustCompile(`/(mariadbd|mysqld)$`), func() error {
		_, err := db.query(ctx, "UPDATE e2e.t SET v = REPEAT('y', 200) WHERE id % 10 = 0; FLUSH TABLES e2e.t FOR EXPORT; UNLOCK TABLES;")
		return err
	}); err != nil {
		return err
	}
	rows, err := db.query(ctx, "SELECT count(*) FROM e2e.t")
	if err != nil {
		return err
	}
	fmt.Printf("rows: %s\n", rows)
	return nil
}
