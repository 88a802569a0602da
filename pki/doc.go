// Package pki holds the certificate helpers the gateway and the laptop use
// at run time: the identity a verified device certificate carries
// ([IdentityOf], [Fingerprint]), loading certificates and CRLs and checking
// a CRL's signature ([LoadCertificates], [LoadCRL]), the SSL-checker style
// [CheckChain], parsing private keys and refusing keys others may read
// ([ParseKey], [CheckKeyPerm]), and serial number spellings.
//
// The certificate authority itself (init, issue, sign, revoke, the index
// and the CRL it signs) is package pki/ca. Only the "sallyport pki" command
// line (pki/pkicmd) and tools may import it; the gateway and the laptop must
// not link the CA (a test in pki/ca enforces this).
//
// # Serial spellings
//
// [ParseSerial] accepts hexadecimal with or without colons (or spaces), in any
// case, with an optional "0x" prefix or an openssl "serial=" prefix; decimal
// needs a "d:" (or "dec:") prefix, because a string of digits alone is also
// valid hexadecimal and is read as such. [FormatSerial] prints the canonical
// form: lowercase hex without colons. Serials the CA (pki/ca) issues always
// contain a hex letter, so the CLI can also take a bare decimal serial
// unambiguously.
package pki
