// Package monitoring has no code of its own: its tests check
// deploy/monitoring, the Prometheus alerting rules and the Grafana dashboard.
// The rules pass the checks `promtool check rules` runs, made with the
// Prometheus module's own rule parser, plus the house rules of that file
// (severity, summary, description, a for duration). Every PromQL expression
// of a rule or a panel parses, and every metric it names exists: the
// services' metrics on the /metrics of the real services after an upload,
// the JetStream metrics in what prometheus-nats-exporter exports.
package monitoring
