package pkicmd

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki/ca"
	"github.com/sallyport/sallyport/pki/hwkey"
)

func init() {
	register(&command{
		name:    "csr",
		summary: "on a laptop: make a device key and a signing request",
		usage:   "--device NAME [--key TYPE] [--tpm [--tpm-device PATH] | --pkcs11 URI] | --device NAME --activate CHALLENGE",
		help: `Run on the device itself. Makes a private key that never leaves the machine
and a certificate signing request (DIR/devices/NAME.csr) to hand to the
admin, who runs "sallyport pki sign". The CSR only carries the key and the
name; the admin decides everything else.

Where the key is made:
  (default)     a key file, DIR/devices/NAME.key (mode 0600)
  --tpm         inside this laptop's TPM 2.0: the key cannot be exported;
                DIR/devices/NAME.tpmkey holds it wrapped by the TPM's storage
                root key, usable only in this TPM (ecdsa or rsa2048/rsa3072)
  --pkcs11 URI  inside a PKCS#11 token (smart card, security key), as
                non-extractable and sensitive; URI is RFC 7512, e.g.
                pkcs11:token=alice;object=sallyport?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so&pin-source=file:/etc/sallyport/alice.pin
                (the PIN comes from pin-source, never from the command line)
It prints the line the profile needs (key_tpm or key_pkcs11) for
"sallyport pki bundle".

With --tpm, when the TPM has an endorsement key certificate from its
maker (most do), it also writes an attestation (DIR/devices/NAME.attest:
the EK certificate and the device key certified by a new attestation key,
kept in DIR/devices/NAME.ak.tpmkey). Send it with the CSR: the admin's
"pki sign --require-hardware" verifies it and answers with a challenge only
this TPM can open; "pki csr --device NAME --activate NAME.challenge" opens
it and writes DIR/devices/NAME.response for the admin.`,
		example: `  sallyport pki csr --device alice-laptop --dir ~/.config/sallyport
  sudo sallyport pki csr --device alice-laptop --tpm --dir /etc/sallyport
  # send DIR/devices/alice-laptop.csr to the admin`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "device name (required)")
			key := fs.String("key", "ecdsa", "key type: ecdsa (P-256), ed25519 or rsa3072; in hardware ecdsa, rsa2048 or rsa3072")
			tpm := fs.Bool("tpm", false, "make the key inside this laptop's TPM 2.0")
			tpmDevice := fs.String("tpm-device", "", "the TPM (default "+hwkey.DefaultTPMDevice+")")
			p11 := fs.String("pkcs11", "", "make the key inside the PKCS#11 token this RFC 7512 URI names")
			activate := fs.String("activate", "", "open the admin's attestation challenge FILE in this TPM (after --tpm)")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *device == "" {
					return usagef("--device is required")
				}
				if *activate != "" {
					if *tpm || *p11 != "" {
						return usagef("--activate answers a challenge for a key made earlier; give it alone (with --tpm-device if needed)")
					}
					return activateCSR(dirOf(fs), *device, *tpmDevice, *activate, stdout)
				}
				if *tpm && *p11 != "" {
					return usagef("--tpm and --pkcs11: pick one place for the key")
				}
				if *tpmDevice != "" && !*tpm {
					return usagef("--tpm-device needs --tpm or --activate")
				}
				if *tpm || *p11 != "" {
					alg, err := hwkey.ParseAlgorithm(*key)
					if err != nil {
						return usagef("%v", err)
					}
					return hardwareCSR(dirOf(fs), *device, alg, *tpm, *tpmDevice, *p11, stdout)
				}
				kt, err := ca.ParseKeyType(*key)
				if err != nil {
					return usagef("%v", err)
				}
				csr, key, err := ca.MakeCSR(dirOf(fs), *device, kt)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "key: %s (stays on this device)\ncsr: %s (send this to the admin)\n", key, csr)
				return nil
			}
		},
	})
}

// hardwareCSR makes the device key in the TPM or the token and the CSR for
// it; with the TPM it also keeps the TPM key file.
func hardwareCSR(dir, device string, alg hwkey.Algorithm, tpm bool, tpmDevice, uri string, stdout io.Writer) error {
	if err := ca.ValidName("device", device); err != nil {
		return err
	}
	sub := filepath.Join(dir, "devices")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return fmt.Errorf("csr: %w", err)
	}
	csrPath := filepath.Join(sub, device+".csr")
	keyPath := filepath.Join(sub, device+".tpmkey")
	for _, p := range []string{keyPath, filepath.Join(sub, device+".key")} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("csr: key %s already exists; refusing to make a second key for %s", p, device)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("csr: %w", err)
		}
	}
	var signer hwkey.Signer
	var ref, attestNote string
	if tpm {
		keyFile, s, err := hwkey.GenerateTPM(tpmDevice, alg, "sallyport device "+device)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(keyPath, keyFile, 0o600); err != nil {
			return err
		}
		abs, err := filepath.Abs(keyPath)
		if err != nil {
			return err
		}
		hwkey.SetFile(s, abs)
		signer = s
		attestNote = attestCSR(sub, device, tpmDevice, keyFile)
		ref = fmt.Sprintf("key_tpm = %q", abs)
		if tpmDevice != "" {
			ref += fmt.Sprintf("\ntpm_device = %q", tpmDevice)
		}
	} else {
		s, err := hwkey.GeneratePKCS11(uri, alg)
		if err != nil {
			return err
		}
		signer = s
		ref = fmt.Sprintf("key_pkcs11 = %q", uri)
	}
	defer signer.Close()
	csr, err := ca.EncodeCSR(device, signer)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(csrPath, csr, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key: %s (made there; it cannot be exported)\ncsr: %s (send this to the admin)\n%sprofile: the [tls] section names the key with\n  %s\n",
		signer.Where(), csrPath, attestNote, indent(ref))
	return nil
}

// attestCSR writes the TPM's attestation of the new key (and the
// attestation key's file) next to the CSR, and says what it did. A TPM
// without an EK certificate only gets a note: the key is still in the TPM.
func attestCSR(sub, device, tpmDevice string, keyFile []byte) string {
	a, akFile, err := hwkey.AttestTPM(tpmDevice, keyFile)
	if err != nil {
		return fmt.Sprintf("attestation: none (%v); the admin can only vouch for this key (pki sign --key-origin tpm)\n", err)
	}
	data, err := json.MarshalIndent(a, "", "  ")
	if err == nil {
		err = atomicfile.Write(filepath.Join(sub, device+".ak.tpmkey"), akFile, 0o600)
	}
	if err == nil {
		err = atomicfile.Write(filepath.Join(sub, device+".attest"), data, 0o644)
	}
	if err != nil {
		return fmt.Sprintf("attestation: could not be written (%v)\n", err)
	}
	return fmt.Sprintf("attestation: %s (send it with the CSR; the admin verifies it with pki sign --require-hardware)\n", filepath.Join(sub, device+".attest"))
}

// activateCSR opens the admin's challenge in this TPM with the device's
// attestation key and writes the answer for the admin.
func activateCSR(dir, device, tpmDevice, challengePath string, stdout io.Writer) error {
	if err := ca.ValidName("device", device); err != nil {
		return err
	}
	raw, err := userfile.Read(challengePath, 64<<10)
	if err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	var ch hwkey.Challenge
	if err := json.Unmarshal(raw, &ch); err != nil {
		return fmt.Errorf("challenge %s: %w", challengePath, err)
	}
	if ch.Device != device {
		return fmt.Errorf("challenge %s is for device %q, not %q", challengePath, ch.Device, device)
	}
	sub := filepath.Join(dir, "devices")
	akPath := filepath.Join(sub, device+".ak.tpmkey")
	ak, err := userfile.Read(akPath, 64<<10)
	if err != nil {
		return fmt.Errorf("attestation key: %w (made by pki csr --tpm on this laptop)", err)
	}
	secret, err := hwkey.ActivateTPM(tpmDevice, ak, &ch)
	if err != nil {
		return err
	}
	out, err := json.Marshal(activationAnswer{Device: device, Secret: secret})
	if err != nil {
		return err
	}
	resp := filepath.Join(sub, device+".response")
	if err := atomicfile.Write(resp, out, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "response: %s (send this to the admin)\n", resp)
	return nil
}

// activationAnswer is the laptop's answer to an attestation challenge.
type activationAnswer struct {
	Device string `json:"device"`
	Secret []byte `json:"secret"`
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }
