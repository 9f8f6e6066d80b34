//go:build !blobref_no_s3

package blobdrivers

import _ "gocloud.dev/blob/s3blob" // s3://
