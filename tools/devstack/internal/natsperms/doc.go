// Package natsperms has no code of its own: its tests start a real NATS
// server from deploy/nats/nats.conf, the configuration docker compose
// mounts, and show that each blobref service can do its job as its own NATS
// user and nothing more. The setup user first does what `blobrefctl setup`
// does (service.Setup: the streams, the staging bucket, the durable
// consumers); then each service runs what it runs with NATS_SETUP=off (the
// stream look-up, the steprun consumer runtime on its looked-up durable
// consumer, the Object Store claim check, ingest's staging and dead-letter
// look-ups), with its replies on its own inbox prefix, and tries what it
// must not do: read another's inbox, change a stream (max_age=1s), create a
// consumer, purge the staging bucket; the server must refuse each with a
// permissions violation. Finally the real service binaries, started before
// the real `blobrefctl setup` ran, wait for it and then carry uploads
// through the pipeline, each with its own user and password.
package natsperms
