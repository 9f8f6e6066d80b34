//go:build !blobref_no_azure

package blobdrivers

import _ "gocloud.dev/blob/azureblob" // azblob://
