module github.com/blobref/blobref/e2e

go 1.26.0

require (
	github.com/blobref/blobref/internal v0.0.0-00010101000000-000000000000
	github.com/blobref/blobref/pkg/events v0.0.0-00010101000000-000000000000
	gopkg.in/yaml.v3 v3.0.1
)

replace (
	github.com/blobref/blobref/internal => ../internal
	github.com/blobref/blobref/pkg/events => ../pkg/events
)
