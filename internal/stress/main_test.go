package stress

import (
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

// TestMain checks that no test leaves a SysV segment behind (Work holds
// real ones).
func TestMain(m *testing.M) { testutil.Main(m, nil) }
