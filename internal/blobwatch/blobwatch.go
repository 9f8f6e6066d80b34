//go:build linux

// Package blobwatch counts the writes of objects into a file:// bucket's
// directory with inotify, as evidence independent of the services' own
// word: how many times each object landed.
//
// gocloud.dev's fileblob writes an object into a temporary file (in
// os.TempDir, or next to the key with no_tmp_dir), writes its "<key>.attrs"
// sidecar, then renames the temporary file onto the key. So each write of an
// object is exactly one IN_MOVED_TO of its name in the directory (a direct
// write would be an IN_CLOSE_WRITE of the name, counted too). Sidecars and
// temporary files are not objects and are not counted as writes; a crash
// between the sidecar and the rename leaves a sidecar without an object,
// which the retry overwrites.
package blobwatch

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Watcher counts object writes in one directory.
type Watcher struct {
	fd   int
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	writes   map[string]int // object name -> times it landed
	deletes  map[string]int // object name -> times it was removed or moved away
	overflow bool
	err      error
}

// Watch starts counting writes in dir, which must exist.
func Watch(dir string) (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	mask := uint32(unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_DELETE | unix.IN_MOVED_FROM)
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	w := &Watcher{fd: fd, stop: make(chan struct{}), done: make(chan struct{}), writes: map[string]int{}, deletes: map[string]int{}}
	go w.loop()
	return w, nil
}

// IsObject reports whether a file name in the directory is an object, not a
// sidecar or a temporary file of fileblob's.
func IsObject(name string) bool {
	return name != "" && !strings.HasSuffix(name, ".attrs") && !strings.HasSuffix(name, ".tmp")
}

func (w *Watcher) loop() {
	defer close(w.done)
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			select {
			case <-w.stop:
				return
			default:
			}
			fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}} // #nosec G115 -- a file descriptor, which poll(2) takes as an int
			_, _ = unix.Poll(fds, 100)
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			w.mu.Lock()
			w.err = fmt.Errorf("inotify read: %w", err)
			w.mu.Unlock()
			return
		}
		w.parse(buf[:n])
	}
}

func (w *Watcher) parse(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0])) // #nosec G103 -- inotify(7) events are raw structs; the loop checks the length first
		nameLen := int(ev.Len)
		raw := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+nameLen]
		name := string(bytes.TrimRight(raw, "\x00"))
		b = b[unix.SizeofInotifyEvent+nameLen:]
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			w.overflow = true
			continue
		}
		if !IsObject(name) || ev.Mask&unix.IN_ISDIR != 0 {
			continue
		}
		switch {
		case ev.Mask&(unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE) != 0:
			w.writes[name]++
		case ev.Mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			w.deletes[name]++
		}
	}
}

// Counts is what a Watcher saw.
type Counts struct {
	Writes  map[string]int // object name -> times it landed
	Deletes map[string]int // object name -> times it was removed or moved away
}

// Close stops watching, after reading every event already queued, and
// returns the counts. It fails if the kernel's event queue overflowed
// (events were lost: the counts prove nothing) or reading failed.
func (w *Watcher) Close() (Counts, error) {
	close(w.stop)
	<-w.done
	// Whatever arrived between the last read and stop.
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(w.fd, buf)
		if err != nil || n <= 0 {
			break
		}
		w.parse(buf[:n])
	}
	_ = unix.Close(w.fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	c := Counts{Writes: w.writes, Deletes: w.deletes}
	if w.overflow {
		return c, errors.New("blobwatch: the inotify queue overflowed, events were lost: the run is invalid (raise fs.inotify.max_queued_events)")
	}
	return c, w.err
}
