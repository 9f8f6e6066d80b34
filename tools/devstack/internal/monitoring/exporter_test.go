package monitoring

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// exporterPrefix begins the names of prometheus-nats-exporter's JetStream
// metrics (github.com/nats-io/prometheus-nats-exporter, collector/jsz.go):
// it names them <namespace>_<level>_<name>, the namespace being
// collector.JetStreamSystem, "jetstream", unless its -prefix flag replaces
// it. It exports them when run with -jsz=all (or consumers), reading
// /jsz?consumers=true&config=true from the server's monitoring port.
//
// jszMetrics lists them with their labels: those that both versions of
// collector/jsz.go read for it define (commits 0404192e3f2c and
// e58bd1d30bd7; between them stream_raft_group and three stream metrics
// were added and consumer_created dropped). The Go module proxy refuses the
// exporter's module, so the test cannot build and run the exporter as it
// does nats-server: the list is taken from its source.
const exporterPrefix = "jetstream_"

var (
	jszServerLabels   = []string{"server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader"}
	jszStreamLabels   = append(append([]string(nil), jszServerLabels...), "account", "account_id", "stream_name", "stream_leader", "is_stream_leader")
	jszConsumerLabels = append(append([]string(nil), jszStreamLabels...), "consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc")

	jszMetrics = map[string][]string{
		"server_jetstream_disabled":       jszServerLabels,
		"server_total_streams":            jszServerLabels,
		"server_total_consumers":          jszServerLabels,
		"server_total_messages":           jszServerLabels,
		"server_total_message_bytes":      jszServerLabels,
		"server_max_memory":               jszServerLabels,
		"server_max_storage":              jszServerLabels,
		"stream_total_messages":           jszStreamLabels,
		"stream_total_bytes":              jszStreamLabels,
		"stream_first_seq":                jszStreamLabels,
		"stream_last_seq":                 jszStreamLabels,
		"stream_consumer_count":           jszStreamLabels,
		"consumer_delivered_consumer_seq": jszConsumerLabels,
		"consumer_delivered_stream_seq":   jszConsumerLabels,
		"consumer_num_ack_pending":        jszConsumerLabels,
		"consumer_num_redelivered":        jszConsumerLabels,
		"consumer_num_waiting":            jszConsumerLabels,
		"consumer_num_pending":            jszConsumerLabels,
		"consumer_ack_floor_stream_seq":   jszConsumerLabels,
		"consumer_ack_floor_consumer_seq": jszConsumerLabels,
	}
)

// exporterCatalog is what the exporter exports for the server whose /jsz
// answered js: its metrics and their labels, with the values of account,
// stream_name and consumer_name the exporter takes from that answer (all
// they can be), and the leader flags' "true" and "false". The other labels'
// values are not known here.
func exporterCatalog(js *server.JSInfo) catalog {
	values := map[string]*labelInfo{
		"account":            {values: map[string]bool{}, closed: true},
		"stream_name":        {values: map[string]bool{}, closed: true},
		"consumer_name":      {values: map[string]bool{}, closed: true},
		"is_meta_leader":     {values: map[string]bool{"true": true, "false": true}, closed: true},
		"is_stream_leader":   {values: map[string]bool{"true": true, "false": true}, closed: true},
		"is_consumer_leader": {values: map[string]bool{"true": true, "false": true}, closed: true},
	}
	for _, a := range js.AccountDetails {
		values["account"].values[a.Name] = true
		for _, s := range a.Streams {
			values["stream_name"].values[s.Name] = true
			for _, c := range s.Consumer {
				values["consumer_name"].values[c.Name] = true
			}
		}
	}
	cat := catalog{source: "prometheus-nats-exporter's JetStream metrics (collector/jsz.go)", series: map[string]map[string]*labelInfo{}}
	for name, lbls := range jszMetrics {
		m := map[string]*labelInfo{}
		for _, l := range lbls {
			if v, ok := values[l]; ok {
				m[l] = v
			} else {
				m[l] = &labelInfo{}
			}
		}
		cat.series[exporterPrefix+name] = m
	}
	return cat
}

// readJsz reads what the exporter reads with -jsz=all from the monitoring
// endpoint at base (http://host:port).
func readJsz(t testing.TB, base string) *server.JSInfo {
	t.Helper()
	resp, err := httpClient.Get(base + "/jsz?consumers=true&config=true")
	if err != nil {
		t.Fatalf("jsz: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jsz: got %s, want 200", resp.Status)
	}
	var js server.JSInfo
	if err := json.NewDecoder(resp.Body).Decode(&js); err != nil {
		t.Fatalf("jsz: %v", err)
	}
	return &js
}
