// Package nft is the nftables code both sides share: a table of
// sallyport's own (family inet, one base chain) created or replaced in one
// netlink transaction, removed, looked up, and the matchers rules are made
// of (interface, family, ports, source or destination prefix, fwmark). The
// gateway's masquerade table (server/nat_linux.go) and the laptop's kill
// switch (client/killswitch_linux.go) say only which rules they want.
//
// It talks to the kernel through github.com/google/nftables over netlink,
// so no `nft` binary is needed; everything goes through the Conn
// interface, so tests compare the generated tables to golden rule sets
// without root (internal/nft/nfttest). Linux only: the other platforms
// have no table to write, and their callers refuse before reaching here.
package nft
