package blobstore_test

import (
	"testing"

	"github.com/blobref/blobref/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.KnownLeaks...) }
