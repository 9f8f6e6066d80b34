// Package release says how blobref's release binaries are built, for the
// programs that build them as `make build` and the Dockerfile do: the
// benchmarks, which measure what ships, and the tests of release builds.
package release

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
