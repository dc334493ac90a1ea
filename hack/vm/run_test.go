package vm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVMRunRefusesBadArguments: hack/vm.sh run names what is wrong with
// its arguments and exits 2 before it builds or boots anything (the cache
// it is pointed at stays empty).
func TestVMRunRefusesBadArguments(t *testing.T) {
	script, err := filepath.Abs("../vm.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dbroot", "bogus", "--", "true"}, "--dbroot 'bogus': the database roots are trixie and sid"},
		{[]string{"--dbroot"}, "--dbroot needs a suite"},
		{[]string{"--disk", "4096:3000", "--", "true"}, "UNIT must be a power of two"},
		{[]string{"--disk", "1024:4096", "--", "true"}, "LBA must be 512 or 4096"},
		{[]string{"--timeout", "0", "--", "true"}, "--timeout '0' is not a number of seconds"},
		{[]string{"--mem", "lots", "--", "true"}, "--mem 'lots' is not a size"},
		{[]string{"--bogus", "--", "true"}, "unknown argument '--bogus'"},
		{[]string{"--allow-reset"}, "no COMMAND"},
	} {
		cache := t.TempDir()
		cmd := exec.Command(script, append([]string{"run"}, c.args...)...)
		cmd.Env = append(os.Environ(), "UNTORN_CACHE="+cache)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("vm.sh run %q: %v, want exit status 2\n%s", c.args, err, out)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("vm.sh run %q said %q, want it to name %q", c.args, strings.TrimSpace(string(out)), c.want)
		}
		if ents, _ := os.ReadDir(filepath.Join(cache, "vm")); len(ents) != 0 {
			t.Errorf("vm.sh run %q wrote to its cache: %d entries", c.args, len(ents))
		}
	}
}
