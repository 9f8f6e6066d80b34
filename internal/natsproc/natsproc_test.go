package natsproc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/freeport"
)

// TestRestartAndKillKeepTheStore starts a server, stores a message, stops
// it, restarts it, kills it (SIGKILL) and restarts it again: the message
// is there each time, on the same port.
func TestRestartAndKillKeepTheStore(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Config{StoreDir: filepath.Join(dir, "store")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	url := s.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.1", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	for _, bounce := range []struct {
		name string
		down func()
	}{{"SIGTERM", s.Stop}, {"SIGKILL", s.Kill}} {
		bounce.down()
		if err := s.Restart(); err != nil {
			t.Fatalf("restart after %s: %v", bounce.name, err)
		}
		if s.URL() != url {
			t.Fatalf("after %s: URL %s, want %s", bounce.name, s.URL(), url)
		}
		var msg *jetstream.RawStreamMsg
		for {
			st, err := js.Stream(ctx, "T")
			if err == nil {
				if msg, err = st.GetMsg(ctx, 1); err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("after %s: message 1: %v", bounce.name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if string(msg.Data) != "kept" {
			t.Fatalf("after %s: message 1 is %q, want \"kept\"", bounce.name, msg.Data)
		}
	}
	if !strings.Contains(s.Log(), "Server is ready") {
		t.Errorf("the log lacks the server's start-up lines:\n%s", s.Tail(10))
	}
}

// TestStartReportsABadConfiguration shows the server's own complaint when
// it cannot start.
func TestStartReportsABadConfiguration(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(conf, []byte("jetstream { max_file_store: lots }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(Config{StoreDir: filepath.Join(dir, "store"), ConfigFile: conf})
	if err == nil || !strings.Contains(err.Error(), "exited at start-up") || !strings.Contains(err.Error(), "max_file_store") {
		t.Fatalf("got %v, want the server's exit with its complaint about max_file_store", err)
	}
}

// TestLimitsWithoutAConfiguration: a server started without a
// configuration file has Limits' JetStream store, not three quarters of
// the disk's free space.
func TestLimitsWithoutAConfiguration(t *testing.T) {
	monitor, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Config{StoreDir: filepath.Join(t.TempDir(), "store"), Args: []string{"-m", strconv.Itoa(monitor)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", monitor))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var varz struct {
		JetStream struct {
			Config struct {
				MaxMemory  int64 `json:"max_memory"`
				MaxStorage int64 `json:"max_storage"`
			} `json:"config"`
		} `json:"jetstream"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&varz); err != nil {
		t.Fatal(err)
	}
	if got := varz.JetStream.Config; got.MaxStorage != 4<<30 || got.MaxMemory != 64<<20 {
		t.Errorf("JetStream max storage %d, max memory %d; want Limits' %d and %d", got.MaxStorage, got.MaxMemory, 4<<30, 64<<20)
	}
}
