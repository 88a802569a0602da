// Package nfttest is for tests only: a fake netfilter connection that
// records what would be sent to the kernel, and a renderer of rules (Linux).
package nfttest
