package testenv

import "go.uber.org/goleak"

// KnownLeaks are goroutines that libraries leave behind through no fault of
// the code under test, for goleak.VerifyTestMain.
//
// nats.go v1.55's ObjectStore.Put publishes chunks through a JetStream
// context of its own and cleans its publisher up when done; when the cleanup
// runs before the goroutine that watches for reconnects has read its status
// channel, that goroutine waits on a nil channel forever
// (jetstream.resetPendingAcksOnReconnect). Seen once in blobstore's tests.
var KnownLeaks = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
}
