//go:build !blobref_no_gcs

package blobdrivers

import _ "gocloud.dev/blob/gcsblob" // gs://
