// Package broker runs JetStream as separate nats-server processes for a
// torture run: one node, or a three-node cluster with routes on loopback.
// Each node keeps its port and store directory across restarts, so a
// restart (SIGTERM or SIGKILL, then start) comes back on the same store.
package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/proc"
)

// Node is one nats-server.
type Node struct {
	Name        string
	Port        int
	ClusterPort int
	StoreDir    string
	logPath     string
	args        []string

	mu sync.Mutex
	p  *proc.Process
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Broker is the JetStream server or cluster of a run.
type Broker struct {
	bin   string
	Nodes []*Node
}

// Start starts size nodes (1, or 3 for a cluster) under dir with the
// nats-server binary bin, and waits until JetStream is ready.
func Start(ctx context.Context, bin, dir string, size int) (*Broker, error) {
	b := &Broker{bin: bin}
	for i := range size {
		n := &Node{Name: fmt.Sprintf("n%d", i+1), StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		var err error
		if n.Port, err = freeport.Port(); err != nil {
			return nil, err
		}
		if n.ClusterPort, err = freeport.Port(); err != nil {
			return nil, err
		}
		n.logPath = filepath.Join(dir, n.Name+".log")
		if err := os.MkdirAll(n.StoreDir, 0o750); err != nil {
			return nil, err
		}
		b.Nodes = append(b.Nodes, n)
	}
	// natsproc's limits, so that the streams' reservations do not depend
	// on how much of the disk is free (natsproc.Limits).
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(natsproc.Limits), 0o600); err != nil {
		return nil, err
	}
	for _, n := range b.Nodes {
		n.args = []string{"-c", conf, "-a", "127.0.0.1", "-p", fmt.Sprint(n.Port), "-js", "-sd", n.StoreDir, "-n", n.Name}
		if size > 1 {
			var routes []string
			for _, o := range b.Nodes {
				if o != n {
					routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.ClusterPort))
				}
			}
			n.args = append(n.args, "--cluster_name", "torture", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", n.ClusterPort), "--routes", strings.Join(routes, ","))
		}
	}
	for _, n := range b.Nodes {
		if err := b.StartNode(n); err != nil {
			b.Stop()
			return nil, err
		}
	}
	return b, nil
}

// URLs is the comma-separated client URLs of every node, as NATS_URL takes them.
func (b *Broker) URLs() string {
	urls := make([]string, len(b.Nodes))
	for i, n := range b.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// StartNode starts n (again) on its port and store.
func (b *Broker) StartNode(n *Node) error {
	p, err := proc.Start(n.Name, n.logPath, b.bin, nil, n.args...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.p = p
	n.mu.Unlock()
	return proc.WaitTCP(fmt.Sprintf("127.0.0.1:%d", n.Port), 30*time.Second)
}

// KillNode stops n: with SIGKILL when hard, else SIGTERM (a clean shutdown).
func (b *Broker) KillNode(n *Node, hard bool) {
	n.mu.Lock()
	p := n.p
	n.mu.Unlock()
	if p == nil {
		return
	}
	if hard {
		p.Kill()
	} else {
		p.Stop(30 * time.Second)
	}
}

// Node returns the node named name.
func (b *Broker) Node(name string) *Node {
	for _, n := range b.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Stop stops every node.
func (b *Broker) Stop() {
	for _, n := range b.Nodes {
		b.KillNode(n, false)
	}
}

// StreamLeader returns the name of the node leading the stream.
func StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// AwaitStreams waits until JetStream answers for both pipeline streams with
// replicas replicas (creating them if need be) and, for a cluster, every
// replica is current.
func AwaitStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	var last error
	for ctx.Err() == nil {
		last = func() error {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := events.EnsureStreams(c, js, events.StreamOptions{Replicas: replicas}); err != nil {
				return err
			}
			for _, name := range []string{events.StreamName, events.DLQStreamName} {
				s, err := js.Stream(c, name)
				if err != nil {
					return err
				}
				info, err := s.Info(c)
				if err != nil {
					return err
				}
				if replicas > 1 {
					if info.Cluster == nil || info.Cluster.Leader == "" {
						return fmt.Errorf("stream %s: no leader", name)
					}
					if len(info.Cluster.Replicas) != replicas-1 {
						return fmt.Errorf("stream %s: %d peers, want %d", name, len(info.Cluster.Replicas), replicas-1)
					}
					for _, r := range info.Cluster.Replicas {
						if !r.Current || r.Offline {
							return fmt.Errorf("stream %s: replica %s not current", name, r.Name)
						}
					}
				}
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("streams not ready: %w", last)
}

// Pid is the process id of the node's running server, or 0.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil || n.p.Exited() {
		return 0
	}
	return n.p.Pid()
}
