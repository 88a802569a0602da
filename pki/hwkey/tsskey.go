package hwkey

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The TPM key file is the TSS2 "loadable key" of the ASN.1 Specification
// for TPM 2.0 Key Files (draft-bottomley-tpm2-keys), PEM type
// "TSS2 PRIVATE KEY": the same file OpenConnect, the tpm2 OpenSSL provider
// and tpm2-tss-engine read. Its private part is wrapped by the TPM's
// storage root key, so the file is useless without that TPM.

// tssPEMType is the PEM block type of a TPM key file.
const tssPEMType = "TSS2 PRIVATE KEY"

// oidLoadableKey is id-loadablekey (2.23.133.10.1.3).
var oidLoadableKey = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 3}

// ownerHierarchy as the parent means: under the primary key the TPM
// derives from its owner seed with the TCG's standard SRK template (ECC
// P-256, or RSA 2048 when rsaParent is set), the same key after every
// reboot.
const ownerHierarchy = 0x40000001

type tssKeyASN1 struct {
	Type        asn1.ObjectIdentifier
	EmptyAuth   bool          `asn1:"optional,explicit,tag:0"`
	Policy      asn1.RawValue `asn1:"optional,explicit,tag:1"`
	Secret      []byte        `asn1:"optional,explicit,tag:2"`
	AuthPolicy  asn1.RawValue `asn1:"optional,explicit,tag:3"`
	Description string        `asn1:"optional,explicit,tag:4,utf8"`
	RSAParent   bool          `asn1:"optional,explicit,tag:5"`
	Parent      int64
	Pubkey      []byte
	Privkey     []byte
}

// tssKey is a parsed TPM key file.
type tssKey struct {
	parent      uint32
	rsaParent   bool
	description string
	public      tpm2.TPM2BPublic
	private     tpm2.TPM2BPrivate
	pub         tpm2.TPMTPublic
}

// maxKeyFile bounds a TPM key file (a few hundred bytes in practice).
const maxKeyFile = 64 << 10

// parseTSSKey parses a TPM key file. Only keys we can use are accepted: a
// loadable key with an empty password and no policy, under the owner
// hierarchy's standard SRK or a persistent parent, for signing.
func parseTSSKey(data []byte) (*tssKey, error) {
	return parseTSSKeyAllowRestricted(data, false)
}

// parseTSSKeyAllowRestricted is parseTSSKey; restricted also accepts a
// restricted signing key (the attestation key).
func parseTSSKeyAllowRestricted(data []byte, restricted bool) (*tssKey, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("TPM key file too large (%d bytes)", len(data))
	}
	var block *pem.Block
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("no %q PEM block (not a TPM key file)", tssPEMType)
		}
		if block.Type == tssPEMType {
			break
		}
	}
	var k tssKeyASN1
	rest, err := asn1.Unmarshal(block.Bytes, &k)
	if err != nil {
		return nil, fmt.Errorf("TPM key file: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("TPM key file: trailing data after the key")
	}
	if !k.Type.Equal(oidLoadableKey) {
		return nil, fmt.Errorf("TPM key file: type %v is not a loadable key (imported and sealed keys are not supported)", k.Type)
	}
	if !k.EmptyAuth || len(k.Secret) != 0 {
		return nil, errors.New("TPM key file: the key has a password; sallyport uses keys without one (the TPM itself is the factor)")
	}
	if len(k.Policy.FullBytes) != 0 || len(k.AuthPolicy.FullBytes) != 0 {
		return nil, errors.New("TPM key file: the key needs a policy (PCRs, PIN); sallyport cannot satisfy policies")
	}
	if k.Parent != ownerHierarchy && (k.Parent < 0x81000000 || k.Parent > 0x81ffffff) {
		return nil, fmt.Errorf("TPM key file: parent 0x%x is neither the owner hierarchy nor a persistent key", k.Parent)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.Pubkey)
	if err != nil {
		return nil, fmt.Errorf("TPM key file: public part: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.Privkey)
	if err != nil {
		return nil, fmt.Errorf("TPM key file: private part: %w", err)
	}
	contents, err := pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("TPM key file: public part: %w", err)
	}
	if !contents.ObjectAttributes.SignEncrypt || contents.ObjectAttributes.Restricted != restricted {
		return nil, errors.New("TPM key file: the key cannot sign (not an unrestricted signing key)")
	}
	if _, err := tpm2.Pub(*contents); err != nil {
		return nil, fmt.Errorf("TPM key file: public key: %w", err)
	}
	return &tssKey{
		parent: uint32(k.Parent), rsaParent: k.RSAParent, description: k.Description,
		public: *pub, private: *priv, pub: *contents,
	}, nil
}

// marshalTSSKey encodes a loadable key under the owner hierarchy's
// standard ECC SRK as a TPM key file.
func marshalTSSKey(pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate, description string) ([]byte, error) {
	der, err := asn1.Marshal(tssKeyASN1{
		Type:        oidLoadableKey,
		EmptyAuth:   true,
		Description: description,
		Parent:      ownerHierarchy,
		Pubkey:      tpm2.Marshal(pub),
		Privkey:     tpm2.Marshal(priv),
	})
	if err != nil {
		return nil, fmt.Errorf("encode TPM key file: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: tssPEMType, Bytes: der}), nil
}
