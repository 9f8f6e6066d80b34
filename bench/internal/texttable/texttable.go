// Package texttable lays out the plain-text tables of benchmark reports.
package texttable

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Table lays out rows of cells: the first column left-aligned, the others
// right-aligned, each as wide as its widest cell, two spaces apart.
type Table struct{ rows [][]string }

// Row adds a row.
func (t *Table) Row(cells ...string) { t.rows = append(t.rows, cells) }

// Write writes the table, each line indented by two spaces.
func (t *Table) Write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		b.WriteString(" ")
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(" " + c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// ErrWriter remembers the first write error, so that a report is written
// without checking each line; Err returns it.
type ErrWriter struct {
	W   io.Writer
	err error
}

func (e *ErrWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.W.Write(p)
	e.err = err
	return n, err
}

// Err is the first write error, or nil.
func (e *ErrWriter) Err() error { return e.err }
