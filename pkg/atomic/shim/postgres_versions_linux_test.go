package shim

import (
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// TestPostgresVersions gives PostgreSQL 17 (Debian trixie) and 18 (sid) the
// proof TestPostgres gives 15, each in a chroot built by hack/dbroot.sh with
// the data on an XFS loop volume mounted inside it. 17 writes relation pages
// through its vectored storage manager calls; 18 is run once per io_method
// (sync, worker, io_uring), since its asynchronous I/O subsystem moves I/O
// into io worker processes or io_uring rings: each method's page writes must
// all be atomic, or be named as unprotected.
func TestPostgresVersions(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	t.Run("17", func(t *testing.T) {
		pgProof(t, chrootDB(t, out, "trixie"), "17", nil)
	})
	t.Run("18", func(t *testing.T) {
		pgProof(t, chrootDB(t, out, "sid"), "18", [][]string{
			{"io_method=sync"}, {"io_method=worker"}, {"io_method=io_uring"}})
	})
}
