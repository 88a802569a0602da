// Package e2e holds the end-to-end tests of sallyport: they run the built
// binary as root inside throw-away network namespaces (laptop, gateway, LAN
// host) joined by veth pairs and assert what a user would see: traffic flows
// through the tunnel, policy and anti-spoofing drop what they must, bad
// certificates are refused with a logged reason, revocation and restarts are
// handled, and nothing is left behind on exit.
//
// The tests need root and iproute2's `ip`; without them they skip. They use
// $SALLYPORT_BIN when set, otherwise TestMain builds ./cmd/sallyport once.
// Traffic only ever goes to addresses inside the namespaces a test created.
package e2e
