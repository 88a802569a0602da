// Package ca is sallyport's small device certificate authority: it makes
// the root (and optional issuing intermediate), issues device and gateway
// certificates, signs CSRs, revokes, signs the CRL, keeps the index of
// everything it issued and writes client bundles. Only the "sallyport pki"
// command line and tools import it; the gateway and the laptop use the
// run-time package pki.
//
// # Directory layout
//
// A PKI lives in one directory (default ./pki, mode 0700). The layout is
// stable; other tools and configs point at these paths:
//
//	D/ca.crt                 trust bundle: the root, plus the intermediate when
//	                         the PKI was made with --intermediate. Server
//	                         client_ca and client ca point here.
//	D/root.crt, D/root.key   root CA certificate and key (key 0600)
//	D/intermediate.crt, D/intermediate.key
//	                         issuing intermediate (only with --intermediate)
//	D/crl.pem                CRLs: by the issuing CA (the intermediate when
//	                         present, else the root), by the root too when an
//	                         intermediate issues and root.key is here, and by
//	                         the previous CA during a rotation; each lists
//	                         every revocation of the index
//	D/renewal-issuer.crt, D/renewal-issuer.key
//	                         the online issuer of renewals (renewal.go)
//	D/previous/N/            the CA before rotation N, with cross.crt
//	D/index.db               issued certificates, revocations and the CRL
//	                         number: a bbolt database (see store.go), one
//	                         transaction per change; an index.json from an
//	                         older release is imported on first use and kept
//	                         as index.json.migrated
//	D/.lock                  flock(2) lock serialising writers of the index
//	D/servers/NAME.crt, NAME.key   gateway certificates (crt = leaf + intermediate)
//	D/devices/NAME.crt, NAME.key   device certificates (crt = leaf + intermediate)
//	D/devices/NAME.csr       CSRs made by "pki csr" (key stays beside it)
//
// Every state file is written atomically (temporary file, fsync, rename; the
// index by bbolt's fsynced commits), so a crash never leaves a half-written
// index, CRL or key. Private keys are PEM
// PKCS#8 "PRIVATE KEY" blocks with mode 0600, loadable by tls.LoadX509KeyPair.
//
// # Device certificates
//
// A device certificate has CN = device name, one OU per group, the user in
// the subject attribute UID (OID 0.9.2342.19200300.100.1.1), the
// clientAuth extended key usage only, a random serial of at least 128 bits,
// and a validity that never extends past its issuer's.
package ca
