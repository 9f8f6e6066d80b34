// Package buildinfo forwards to package buildinfo of the step runtime's
// service harness (github.com/blobref/blobref/pkg/step/stepservice/buildinfo),
// where it moved, until every caller imports it from there.
package buildinfo

import "github.com/blobref/blobref/pkg/step/stepservice/buildinfo"

// Moved to github.com/blobref/blobref/pkg/step/stepservice/buildinfo.
var (
	Version       = buildinfo.Version
	Format        = buildinfo.Format
	IsVersionFlag = buildinfo.IsVersionFlag
)
