package agent_test

import (
	"testing"

	"github.com/dirlockd/dirlockd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }
