// Package natsperms has no code of its own: its tests start a real NATS
// server from deploy/nats/nats.conf, the configuration docker compose
// mounts, and show that each blobref service can do its job as its own NATS
// user and nothing more. They run what the services run (events.EnsureStreams,
// the steprun consumer runtime on each durable consumer, the Object Store
// claim check, ingest's dead-letter lookups), then try what a service must not
// do and expect the server to refuse it with a permissions violation. Finally
// the real service binaries carry uploads through the pipeline, each with its
// own user and password.
package natsperms
