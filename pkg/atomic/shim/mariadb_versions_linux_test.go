package shim

import (
	"testing"

	"github.com/untorn/untorn/internal/testutil"
)

// TestMariaDBVersions gives MariaDB 11.8 (Debian trixie, the current
// long-term release) the proof TestMariaDB gives 10.11, on all three InnoDB
// write paths with innodb_doublewrite=OFF, in a chroot built by
// hack/dbroot.sh with the data on an XFS loop volume mounted inside it.
func TestMariaDBVersions(t *testing.T) {
	out := built(t)
	testutil.RequireRoot(t)
	t.Run("11.8", func(t *testing.T) {
		mariadbProof(t, chrootDB(t, out, "trixie"), "11.8.")
	})
}
