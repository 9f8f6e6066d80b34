// Package blobdrivers links the gocloud.dev/blob drivers BLOB_URL may name
// into a service: file:// and mem:// always; s3://, gs:// and azblob://
// unless a build tag leaves them out.
//
// Each cloud driver brings its SDK, and their code and package
// initialisation are most of a service's memory. Release builds (make build,
// the Dockerfile) use the tag disable_grpc_modules, which leaves out the
// DirectPath dependencies of cloud.google.com/go/storage's gRPC transport
// (xDS, RLS): gs:// URLs use the JSON API, which needs none of them (a gs://
// URL with grpc=true does, on Google Cloud; build without the tag for it).
// blobwriter's RSS at rest is 42 MiB without that tag, 34 MiB with it and
// 22 MiB with file:// and mem:// only; at full load (bench/cmd/throughput,
// file://) 63 MiB without it and 50–52 MiB with it. A deployment that uses
// one store can build without the others too:
//
//	go build -tags disable_grpc_modules,blobref_no_gcs,blobref_no_azure ./services/blobwriter   # S3 only
//	go build -tags disable_grpc_modules,blobref_no_s3,blobref_no_gcs,blobref_no_azure ./services/blobwriter
//
// A BLOB_URL whose driver is left out fails at start-up: no driver is
// registered for its scheme.
package blobdrivers

import (
	_ "gocloud.dev/blob/fileblob" // file://
	_ "gocloud.dev/blob/memblob"  // mem://
)
