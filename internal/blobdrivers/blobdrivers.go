// Package blobdrivers links the gocloud.dev/blob drivers BLOB_URL may name
// into a service: file:// and mem:// always; s3://, gs:// and azblob://
// unless a build tag leaves them out.
//
// Each cloud driver brings its SDK, and their code and package
// initialisation are most of a service's memory: blobwriter's peak RSS is
// about 66 MiB with every driver and 37 MiB with file:// and mem:// only
// (bench/cmd/throughput). A deployment that uses one store can build without
// the others:
//
//	go build -tags blobref_no_gcs,blobref_no_azure ./services/blobwriter   # S3 only
//	go build -tags blobref_no_s3,blobref_no_gcs,blobref_no_azure ./services/blobwriter
//
// A BLOB_URL whose driver is left out fails at start-up: no driver is
// registered for its scheme.
package blobdrivers

import (
	_ "gocloud.dev/blob/fileblob" // file://
	_ "gocloud.dev/blob/memblob"  // mem://
)
