// Package release says how blobref ships, for the programs that run it as
// shipped: how its release binaries are built (as `make build` and the
// Dockerfile do), for the benchmarks, which measure what ships, and the
// tests of release builds; and the JetStream limits of its nats-server
// configuration, for the servers devstack and the benchmarks run.
package release

// The JetStream limits of deploy/nats/nats.conf, in bytes: the servers that
// run the pipeline as deployed (devstack's embedded one, the benchmarks')
// take them, as left unset nats-server sizes its file store at three
// quarters of the disk's free space when it starts, and the services'
// streams could not reserve their bytes on a nearly full disk (see
// natsproc.Limits). devstack's TestEmbeddedNATSLimits checks them against
// the file.
const (
	NATSMaxMemory = 256 << 20
	NATSMaxStore  = 10 << 30
)

// BuildFlags returns the go build flags of a release build: the Makefile's
// GO_BUILD_FLAGS, which the Dockerfile uses too
// (tools/devstack/internal/deploycheck checks that all three agree). Its
// one tag, disable_grpc_modules, leaves out cloud.google.com/go/storage's
// DirectPath gRPC dependencies, which gs:// over the JSON API never uses
// (internal/blobdrivers); a release build has no failpoints
// (pkg/step/failpoint) and no race detector. Build with CGO_ENABLED=0.
func BuildFlags() []string {
	return []string{"-trimpath", "-tags", "disable_grpc_modules", "-ldflags=-s -w"}
}
