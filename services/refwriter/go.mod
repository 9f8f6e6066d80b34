module github.com/blobref/blobref/services/refwriter

go 1.26.0

require (
	github.com/blobref/blobref/internal v0.0.0-00010101000000-000000000000
	github.com/blobref/blobref/pkg/events v0.0.0-00010101000000-000000000000
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.12.0 // indirect
	gocloud.dev v0.47.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

replace (
	github.com/blobref/blobref/internal => ../../internal
	github.com/blobref/blobref/pkg/events => ../../pkg/events
)
