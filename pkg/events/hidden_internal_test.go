package events

import (
	"testing"
	"unicode"
)

// hidden's fast path for ASCII says what the Unicode tables say.
func TestHiddenASCIIAsUnicodeSays(t *testing.T) {
	t.Parallel()
	for r := rune(0); r < 0x80; r++ {
		if want := unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp); hidden(r) != want {
			t.Errorf("hidden(%U) = %v, want %v", r, !want, want)
		}
	}
}
