//go:build !blobref_failpoints

package failpoint

import (
	"context"
	"errors"
	"testing"
)

// Without the build tag there are no failpoints: a specification that
// names one is refused, an empty one is fine, and Inject does nothing.
func TestReleaseBuildHasNoFailpoints(t *testing.T) {
	if Compiled {
		t.Fatal("Compiled is true in a build without the tag")
	}
	for _, spec := range []string{"blob/after-effect=crash", "x=explode", " ; a=error"} {
		if err := Enable(spec); !errors.Is(err, ErrNotCompiled) {
			t.Errorf("Enable(%q): got %v, want ErrNotCompiled", spec, err)
		}
		if err := Check(spec); !errors.Is(err, ErrNotCompiled) {
			t.Errorf("Check(%q): got %v, want ErrNotCompiled", spec, err)
		}
	}
	for _, spec := range []string{"", " ; ;"} {
		if err := Enable(spec); err != nil {
			t.Errorf("Enable(%q): got %v, want nil", spec, err)
		}
	}
	if err := Inject(context.Background(), "blob/after-effect"); err != nil {
		t.Errorf("Inject: got %v, want nil", err)
	}
}
