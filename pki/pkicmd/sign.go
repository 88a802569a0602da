package pkicmd

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
	"github.com/sallyport/sallyport/pki/hwkey"
)

func init() {
	register(&command{
		name:    "sign",
		summary: "sign a device's CSR (the signer decides every extension)",
		usage:   "--csr FILE --device NAME [--override-cn] [--user USER] [--group G]... [--key-origin tpm|pkcs11 | --require-hardware --attestation FILE --ek-ca FILE [--activation FILE]] [--days N] [-o FILE]",
		help: `Issue a device certificate named NAME for the key in a CSR made by
"sallyport pki csr" (or openssl). The CSR must carry exactly one CN, and it
must be NAME: a CSR with no CN or with several is refused, and so is one
whose CN names another device, unless --override-cn says to issue it as NAME
anyway. Only the CSR's public key is used; any extensions or subject fields
it asks for (CA, serverAuth, SANs, OU...) are ignored: the certificate gets
exactly what an "issue" would give. Writes devices/NAME.crt (and -o FILE if
given) and prints serial and fingerprint.

--key-origin tpm|pkcs11 records in the certificate (as a certificate
policy) that you, the issuer, vouch that the CSR's key was made inside the
device's TPM or a PKCS#11 token and cannot leave it: say it only when you
know how the device was enrolled (you or your fleet tooling ran "sallyport
pki csr --tpm" on it). A gateway policy with require_hardware_key = true
admits only certificates that carry it. Nothing in the CSR can set it.

--require-hardware verifies instead of vouching: the CSR must come with the
TPM attestation "pki csr --tpm" wrote (--attestation NAME.attest), whose
endorsement key certificate chains to a TPM maker's CA in --ek-ca (PEM:
the roots and intermediates you trust, e.g. from Infineon, STMicro,
Nuvoton, Intel, AMD), with the CSR's key certified as made in that TPM and
never leaving it. The first run writes a challenge (devices/NAME.challenge)
that only that TPM can open; the laptop answers it ("pki csr --device NAME
--activate NAME.challenge"), and the same sign command with --activation
NAME.response then issues the certificate, recorded as attested.`,
		example: `  sallyport pki sign --csr alice-laptop.csr --device alice-laptop --user alice --group eng -o alice-laptop.crt`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			csrPath := fs.String("csr", "", "CSR file, PEM (required)")
			device := fs.String("device", "", "device name; the CSR's CN must be the same (required)")
			overrideCN := fs.Bool("override-cn", false, "issue as --device even though the CSR's CN is another name")
			keyOrigin := fs.String("key-origin", "", "vouch that the key was made in the device's hardware: tpm or pkcs11 (recorded in the certificate)")
			requireHW := fs.Bool("require-hardware", false, "accept only a CSR whose TPM attestation verifies (with --attestation, --ek-ca)")
			attestPath := fs.String("attestation", "", "the device's TPM attestation (NAME.attest from pki csr --tpm)")
			ekCA := fs.String("ek-ca", "", "PEM file of the TPM manufacturer CAs whose EK certificates you trust")
			activation := fs.String("activation", "", "the laptop's answer to the challenge (NAME.response)")
			user := fs.String("user", "", "user the device belongs to (subject UID)")
			out := fs.String("o", "", "also write the certificate chain to this file")
			var groups listFlag
			fs.Var(&groups, "group", "group (subject OU); repeatable or comma-separated")
			validity := addValidityFlags(fs, ca.DefaultDeviceDays)
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *csrPath == "" {
					return usagef("--csr is required")
				}
				if *device == "" {
					return usagef("--device is required: name the device; the CSR's CN must match it")
				}
				data, err := pki.ReadPEMFile(*csrPath)
				if err != nil {
					return fmt.Errorf("read CSR: %w", err)
				}
				o := validity()
				if *keyOrigin != "" {
					if _, err := pki.KeyOriginPolicy(*keyOrigin); err != nil {
						return usagef("--key-origin: %v", err)
					}
				}
				switch {
				case *requireHW && *keyOrigin != "":
					return usagef("--require-hardware verifies the origin; --key-origin vouches for it: give one")
				case *requireHW && (*attestPath == "" || *ekCA == ""):
					return usagef("--require-hardware needs --attestation (the device's NAME.attest) and --ek-ca (the TPM maker CAs you trust)")
				case !*requireHW && (*attestPath != "" || *ekCA != "" || *activation != ""):
					return usagef("--attestation, --ek-ca and --activation go with --require-hardware")
				}
				o.Name, o.User, o.Groups, o.OverrideCN, o.KeyOrigin = *device, *user, groups, *overrideCN, *keyOrigin
				if *requireHW {
					akPub, done, err := verifyAttestation(ca.New(dirOf(fs)), *device, data, *attestPath, *ekCA, *activation, stdout)
					if err != nil || done {
						return err
					}
					o.KeyOrigin, o.Attested, o.AKPublic = pki.KeyOriginTPM, true, akPub
				}
				p := ca.New(dirOf(fs))
				shortLife(fs, p, &o, stderr)
				is, err := p.SignCSR(data, o)
				if err != nil {
					return err
				}
				if *out != "" {
					chain, err := os.ReadFile(is.CertPath)
					if err != nil {
						return err
					}
					if err := atomicfile.Write(*out, chain, 0o644); err != nil {
						return err
					}
					fmt.Fprintf(stdout, "wrote %s\n", *out)
				}
				printIssued(stdout, stderr, "device", is)
				return nil
			}
		},
	})
}

// verifyAttestation checks the device's TPM attestation for the CSR. With
// no activation answer yet it writes the challenge for the laptop and
// reports done (nothing to sign yet); with one, it checks the answer and
// returns the attestation key's public area for the certificate.
func verifyAttestation(p *ca.PKI, device string, csrPEM []byte, attestPath, ekCAPath, activationPath string, stdout io.Writer) (akPublic []byte, done bool, err error) {
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, false, err
	}
	raw, err := userfile.Read(attestPath, 64<<10)
	if err != nil {
		return nil, false, fmt.Errorf("attestation: %w", err)
	}
	a, err := hwkey.ParseAttestation(raw)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", attestPath, err)
	}
	cas, err := pki.LoadCertificates(ekCAPath)
	if err != nil {
		return nil, false, fmt.Errorf("--ek-ca: %w", err)
	}
	v, err := hwkey.VerifyAttestation(a, csr.PublicKey, pki.NewPool(cas), nil)
	if err != nil {
		return nil, false, fmt.Errorf("refused (--require-hardware): %w", err)
	}
	secret, err := p.ActivationSecret(device, csrPEM, raw)
	if err != nil {
		return nil, false, err
	}
	if activationPath == "" {
		ch, err := hwkey.MakeChallenge(v, device, secret)
		if err != nil {
			return nil, false, err
		}
		out, err := json.MarshalIndent(ch, "", "  ")
		if err != nil {
			return nil, false, err
		}
		path := p.Path("devices", device+".challenge")
		if err := os.MkdirAll(p.Path("devices"), 0o700); err != nil {
			return nil, false, err
		}
		if err := atomicfile.Write(path, out, 0o644); err != nil {
			return nil, false, err
		}
		fmt.Fprintf(stdout, "attestation verified: EK certificate from %q, key certified as made in that TPM\n", v.EKCert.Issuer.CommonName)
		fmt.Fprintf(stdout, "challenge: %s\nnot signed yet: send the challenge to the laptop (sallyport pki csr --device %s --activate %s.challenge),\nthen run this command again with --activation %s.response\n", path, device, device, device)
		return nil, true, nil
	}
	ans, err := userfile.Read(activationPath, 64<<10)
	if err != nil {
		return nil, false, fmt.Errorf("activation: %w", err)
	}
	var got activationAnswer
	if err := json.Unmarshal(ans, &got); err != nil {
		return nil, false, fmt.Errorf("activation %s: %w", activationPath, err)
	}
	if got.Device != device || !hmac.Equal(got.Secret, secret) {
		return nil, false, errors.New("refused (--require-hardware): the activation answer does not match this CSR and attestation: the attestation key is not in the TPM whose EK certificate was sent")
	}
	return v.AKPublic, false, nil
}
