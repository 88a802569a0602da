// Package hwkey holds device keys that never leave the laptop's hardware:
// keys inside the TPM 2.0 (go-tpm, /dev/tpmrm0) and keys inside a PKCS#11
// token (smart card, security key, SoftHSM; crypto11 over miekg/pkcs11,
// built only with the pkcs11 build tag because it needs cgo).
//
// A hardware key is named by a [Ref]: the TPM key file (a TSS2 "loadable
// key" PEM, the format of OpenConnect, the tpm2 OpenSSL provider and
// tpm2-tss-engine: the key's public part and its private part wrapped by
// the TPM's storage root key, useless in any other TPM) or an RFC 7512
// pkcs11: URI (token, object, module-path, pin-source). [Open] returns a
// [Signer], a crypto.Signer whose private half stays in the hardware, for
// the TLS handshake; [GenerateTPM] and [GeneratePKCS11] make a new
// non-exportable key in the hardware for "sallyport pki csr".
//
// Errors say in plain words what is wrong: no TPM, TPM busy or in
// dictionary-attack lockout, key made in another TPM; token not present,
// wrong PIN (with what the token says about the tries left), PIN locked.
//
// The package imports pki (key file permissions) and nothing else of ours;
// the laptop links it, the gateway does not need it.
package hwkey
