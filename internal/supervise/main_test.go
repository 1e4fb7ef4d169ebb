package supervise

import (
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestMain checks that no test leaves a SysV segment behind (LocalGuard
// holds real ones).
func TestMain(m *testing.M) { testutil.Main(m, nil) }
