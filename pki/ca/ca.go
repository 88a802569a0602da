package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
)

// Default lifetimes in days.
const (
	DefaultRootDays         = 3650
	DefaultIntermediateDays = 1825
	DefaultDeviceDays       = 365
	DefaultServerDays       = 825
	DefaultCRLDays          = 30
)

// backdate is how far before "now" new certificates start, for clock skew.
const backdate = 5 * time.Minute

// ErrNoCA means the directory holds no initialised PKI.
var ErrNoCA = errors.New("no CA here (run: sallyport pki init)")

// PKI is a certificate authority kept in a directory (see the package
// documentation for the layout). Methods that change state hold the
// directory's lock.
type PKI struct {
	Dir string
	Now func() time.Time // clock; nil means time.Now
}

// New returns the PKI kept in dir.
func New(dir string) *PKI { return &PKI{Dir: dir} }

func (p *PKI) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Path returns the path of a file inside the PKI directory.
func (p *PKI) Path(elem ...string) string {
	return filepath.Join(append([]string{p.Dir}, elem...)...)
}

// DeviceCertPath and friends name the per-certificate files.
func (p *PKI) DeviceCertPath(name string) string { return p.Path("devices", name+".crt") }

// DeviceKeyPath is the device key written by "issue".
func (p *PKI) DeviceKeyPath(name string) string { return p.Path("devices", name+".key") }

// ServerCertPath is the gateway certificate chain.
func (p *PKI) ServerCertPath(name string) string { return p.Path("servers", name+".crt") }

// ServerKeyPath is the gateway key.
func (p *PKI) ServerKeyPath(name string) string { return p.Path("servers", name+".key") }

func (p *PKI) lock(exclusive bool) (func(), error) {
	return lockFile(p.Path(".lock"), exclusive)
}

// Initialized reports whether the directory holds a root CA.
func (p *PKI) Initialized() bool {
	_, err := os.Stat(p.Path("root.crt"))
	return err == nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidName checks a device or server name, which is also a file name.
func ValidName(kind, name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("invalid %s name %q: use 1-64 letters, digits, '.', '_', '-', '@', starting with a letter or digit", kind, name)
	}
	return nil
}

// InitOptions configures Init.
type InitOptions struct {
	Name         string  // root CN; default "sallyport Device CA"
	Org          string  // optional subject O
	Key          KeyType // CA key algorithm
	Intermediate bool    // also make an issuing intermediate
	Days         int     // root lifetime; default DefaultRootDays
}

// Init creates the root CA (and intermediate), an empty index and CRL. It
// refuses to touch a directory that already holds a CA.
func (p *PKI) Init(o InitOptions) error {
	for _, f := range []string{"root.crt", "root.key", "ca.crt", "intermediate.key", indexDB, legacyIndex} {
		if _, err := os.Stat(p.Path(f)); err == nil {
			return fmt.Errorf("a CA already exists in %s (%s); refusing to overwrite it: use another --dir or remove the old one first", p.Dir, f)
		}
	}
	if o.Name == "" {
		o.Name = "sallyport Device CA"
	}
	if o.Days <= 0 {
		o.Days = DefaultRootDays
	}
	// Inside the gateway's directory (group sallyport), share what the
	// gateway reads with its group (share.go); elsewhere, owner only.
	gid := p.initShare()
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := os.Chmod(p.Dir, 0o700); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	for _, sub := range []string{"devices", "servers"} {
		if err := os.MkdirAll(p.Path(sub), 0o700); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	for _, dir := range []string{p.Dir, p.Path("servers")} {
		if err := shareDir(dir, gid); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	unlock, err := p.lock(true)
	if err != nil {
		return err
	}
	defer unlock()

	now := p.now()
	rootKey, err := GenerateKey(o.Key)
	if err != nil {
		return fmt.Errorf("init: root key: %w", err)
	}
	serial, err := NewSerial(nil)
	if err != nil {
		return err
	}
	subj := pkix.Name{CommonName: o.Name}
	if o.Org != "" {
		subj.Organization = []string{o.Org}
	}
	root := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subj,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(0, 0, o.Days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		// Path length 1: the root may certify an issuing intermediate
		// and the online issuer of renewals (both path length 0), and
		// nothing below them.
		MaxPathLen: 1,
	}
	rootCert, err := createCert(root, root, rootKey.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("init: root certificate: %w", err)
	}
	if err := writeKey(p.Path("root.key"), rootKey); err != nil {
		return err
	}
	if err := atomicfile.Write(p.Path("root.crt"), encodeCert(rootCert), 0o644); err != nil {
		return err
	}
	bundle := encodeCert(rootCert)
	var records []*Record
	iss := &issuer{cert: rootCert, key: rootKey}
	if o.Intermediate {
		ikey, err := GenerateKey(o.Key)
		if err != nil {
			return fmt.Errorf("init: intermediate key: %w", err)
		}
		serial, err := NewSerial(nil)
		if err != nil {
			return err
		}
		isubj := subj
		isubj.CommonName = o.Name + " Issuing CA"
		na := now.AddDate(0, 0, DefaultIntermediateDays)
		if na.After(rootCert.NotAfter) {
			na = rootCert.NotAfter
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               isubj,
			NotBefore:             now.Add(-backdate),
			NotAfter:              na,
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
		icert, err := createCert(tmpl, rootCert, ikey.Public(), rootKey)
		if err != nil {
			return fmt.Errorf("init: intermediate certificate: %w", err)
		}
		if err := writeKey(p.Path("intermediate.key"), ikey); err != nil {
			return err
		}
		if err := atomicfile.Write(p.Path("intermediate.crt"), encodeCert(icert), 0o644); err != nil {
			return err
		}
		bundle = append(bundle, encodeCert(icert)...)
		r := recordOf(icert, KindIntermediate, now, false)
		records = append(records, &r)
		iss = &issuer{cert: icert, key: ikey, chain: []*x509.Certificate{icert}}
	}
	if err := atomicfile.Write(p.Path("ca.crt"), bundle, 0o644); err != nil {
		return err
	}
	st, err := openStore(p.Dir, true, false)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer st.Close()
	if err := st.add(records...); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	_, err = p.writeCRL(st, iss, DefaultCRLDays)
	return err
}

func writeKey(path string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// issuer is the CA that signs leaves and CRLs: the intermediate if there is
// one, else the root. chain is what leaf files carry after the leaf.
type issuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate
}

// IssuerPaths returns the certificate and key files of the issuing CA.
func (p *PKI) IssuerPaths() (certPath, keyPath string) {
	if _, err := os.Stat(p.Path("intermediate.crt")); err == nil {
		return p.Path("intermediate.crt"), p.Path("intermediate.key")
	}
	return p.Path("root.crt"), p.Path("root.key")
}

// IssuerCert loads the issuing CA's certificate (no key).
func (p *PKI) IssuerCert() (*x509.Certificate, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	cp, _ := p.IssuerPaths()
	certs, err := pki.LoadCertificates(cp)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// openForSigning takes the PKI's exclusive lock and loads the issuing CA
// and the index (migrating a legacy index.json), for an operation that
// signs and records something. The caller must call done when finished
// (only when err is nil); it closes the index and releases the lock.
func (p *PKI) openForSigning() (done func(), iss *issuer, st *store, err error) {
	unlock, err := p.lock(true)
	if err != nil {
		return nil, nil, nil, err
	}
	if iss, err = p.loadIssuer(); err == nil {
		st, err = p.openIndexLocked()
	}
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return func() { st.Close(); unlock() }, iss, st, nil
}

// openIndexLocked opens the index for writing, migrating a legacy
// index.json first. The caller holds the exclusive lock.
func (p *PKI) openIndexLocked() (*store, error) {
	if needsMigration(p.Dir) {
		if err := migrate(p.Dir); err != nil {
			return nil, err
		}
	}
	return openStore(p.Dir, true, false)
}

func (p *PKI) loadIssuer() (*issuer, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	cp, kp := p.IssuerPaths()
	iss, err := loadCA(cp, kp)
	if err != nil {
		return nil, err
	}
	if iss.cert.CheckSignatureFrom(iss.cert) != nil { // not self-signed: an intermediate
		iss.chain = []*x509.Certificate{iss.cert}
	}
	return iss, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// Roots returns the root certificate(s) and the intermediates of this PKI.
func (p *PKI) Roots() (roots, intermediates []*x509.Certificate, err error) {
	if !p.Initialized() {
		return nil, nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	roots, err = pki.LoadCertificates(p.Path("root.crt"))
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(p.Path("intermediate.crt")); err == nil {
		intermediates, err = pki.LoadCertificates(p.Path("intermediate.crt"))
		if err != nil {
			return nil, nil, err
		}
	}
	return roots, intermediates, nil
}

// IssueOptions configures the certificates Issue, IssueServer and SignCSR make.
type IssueOptions struct {
	Name      string   // device name (CN) or server name
	User      string   // device user (subject UID)
	Groups    []string // device groups (subject OUs)
	DNSNames  []string // server: extra DNS SANs (Name is always one)
	IPs       []net.IP // server: IP SANs
	Key       KeyType  // new key's type
	Days      int      // lifetime in days (clamped to the issuer's)
	NotBefore time.Time
	NotAfter  time.Time // exact end; error if past the issuer's
	// OverrideCN (SignCSR only) issues the certificate as Name although
	// the CSR's CN is a different name.
	OverrideCN bool
	// KeyOrigin (SignCSR only) records where the admin vouches the CSR's
	// key was made: pki.KeyOriginTPM or pki.KeyOriginPKCS11, as a
	// certificate policy (pki.KeyOriginOf) a gateway policy can demand.
	// The CSR's own claims are never used for it.
	KeyOrigin string
	// Attested (SignCSR only): the TPM origin was verified by attestation
	// (pki/hwkey); AKPublic is the attestation key's TPM2B_PUBLIC, kept in
	// the certificate.
	Attested bool
	AKPublic []byte
}

// Issued describes a newly issued certificate.
type Issued struct {
	Record   Record
	Cert     *x509.Certificate
	CertPath string
	KeyPath  string   // "" when signed from a CSR
	KeyGroup string   // the group that may read the key (mode 0640), "" when owner only
	Warnings []string // e.g. lifetime clamped to the issuer's
}

func (p *PKI) validity(o IssueOptions, defDays int, iss *x509.Certificate) (nb, na time.Time, warn string, err error) {
	now := p.now()
	nb = now.Add(-backdate)
	if !o.NotBefore.IsZero() {
		nb = o.NotBefore
	}
	switch {
	case !o.NotAfter.IsZero():
		na = o.NotAfter
		if na.After(iss.NotAfter) {
			return nb, na, "", fmt.Errorf("not-after %s is past the issuing CA's own expiry %s", na.Format(time.RFC3339), iss.NotAfter.Format(time.RFC3339))
		}
	default:
		days := o.Days
		if days <= 0 {
			days = defDays
		}
		start := now
		if !o.NotBefore.IsZero() {
			start = o.NotBefore
		}
		na = start.AddDate(0, 0, days)
		if na.After(iss.NotAfter) {
			na = iss.NotAfter
			warn = fmt.Sprintf("validity shortened to the issuing CA's expiry %s", na.Format(time.RFC3339))
		}
	}
	if !na.After(nb) {
		return nb, na, "", fmt.Errorf("not-after %s is not after not-before %s", na.Format(time.RFC3339), nb.Format(time.RFC3339))
	}
	return nb, na, warn, nil
}

// IssueDevice makes a device key and certificate (clientAuth only).
func (p *PKI) IssueDevice(o IssueOptions) (*Issued, error) {
	return p.issue(KindDevice, o, nil)
}

// IssueServer makes a gateway key and certificate (serverAuth, DNS/IP SANs).
func (p *PKI) IssueServer(o IssueOptions) (*Issued, error) {
	return p.issue(KindServer, o, nil)
}

// SignCSR issues a device certificate named o.Name (required) for the
// public key of a PEM CSR. The CSR must carry exactly one CN, equal to
// o.Name unless o.OverrideCN is set (then the certificate still says
// o.Name): a CSR with two CNs would otherwise be named after whichever one
// a parser keeps, which may be another device's. Only the CSR's key is
// used: every extension, SAN or other subject field it asks for is
// ignored; the signer decides.
func (p *PKI) SignCSR(csrPEM []byte, o IssueOptions) (*Issued, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		return nil, errors.New("sign: name the device (--device NAME); the CSR's CN must match it")
	}
	cn, err := csrCN(csr)
	if err != nil {
		return nil, err
	}
	if cn != o.Name && !o.OverrideCN {
		return nil, fmt.Errorf("sign: the CSR's CN %q is not the device name %q; check who sent it, or pass --override-cn to issue it as %q", cn, o.Name, o.Name)
	}
	return p.issue(KindDevice, o, csr)
}

// ParseCSR parses a PEM CSR and checks its signature (the sender holds
// the key).
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, errors.New(`sign: no PEM "CERTIFICATE REQUEST" block found`)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign: CSR signature invalid: %w", err)
	}
	return csr, nil
}

// csrCN returns the CSR's one CN; none, several (in one RDN or in several)
// or one that is not a string is an error.
func csrCN(csr *x509.CertificateRequest) (string, error) {
	var cns []string
	for _, atv := range csr.Subject.Names {
		if !atv.Type.Equal(oidCommonName) {
			continue
		}
		v, ok := atv.Value.(string)
		if !ok {
			return "", fmt.Errorf("sign: the CSR's CN is not a string (%T)", atv.Value)
		}
		cns = append(cns, v)
	}
	switch len(cns) {
	case 0:
		return "", errors.New("sign: the CSR has no CN; a device CSR names exactly one device (sallyport pki csr --device NAME)")
	case 1:
		return cns[0], nil
	}
	return "", fmt.Errorf("sign: the CSR has %d CNs %q; a device CSR must name exactly one device", len(cns), cns)
}

// oidCommonName is the X.520 commonName attribute (2.5.4.3).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

func (p *PKI) issue(kind string, o IssueOptions, csr *x509.CertificateRequest) (*Issued, error) {
	if err := checkIssueOptions(kind, o); err != nil {
		return nil, err
	}
	done, iss, st, err := p.openForSigning()
	if err != nil {
		return nil, err
	}
	defer done()
	return p.issueLocked(iss, st, kind, o, csr)
}

// IssueDevices issues a device key and certificate for each of opts under
// one hold of the lock (for tools that make thousands; each certificate is
// still recorded in its own transaction). It stops at the first error and
// returns the certificates issued so far.
func (p *PKI) IssueDevices(opts []IssueOptions) ([]*Issued, error) {
	for _, o := range opts {
		if err := checkIssueOptions(KindDevice, o); err != nil {
			return nil, err
		}
	}
	done, iss, st, err := p.openForSigning()
	if err != nil {
		return nil, err
	}
	defer done()
	out := make([]*Issued, 0, len(opts))
	for _, o := range opts {
		is, err := p.issueLocked(iss, st, KindDevice, o, nil)
		if err != nil {
			return out, err
		}
		out = append(out, is)
	}
	return out, nil
}

func checkIssueOptions(kind string, o IssueOptions) error {
	if err := ValidName(kind, o.Name); err != nil {
		return err
	}
	for _, g := range o.Groups {
		if strings.TrimSpace(g) == "" {
			return errors.New("empty group name")
		}
	}
	return nil
}

// issueLocked signs and records one certificate; the caller holds the lock
// (openForSigning).
func (p *PKI) issueLocked(iss *issuer, st *store, kind string, o IssueOptions, csr *x509.CertificateRequest) (*Issued, error) {
	now := p.now()
	prev, err := st.byName(kind, o.Name)
	if err != nil {
		return nil, err
	}
	for _, r := range prev {
		if !r.Revoked() && now.Before(r.NotAfter) {
			return nil, fmt.Errorf("%s %q already has a valid certificate (serial %s); revoke it first: sallyport pki revoke %s", kind, o.Name, r.Serial, r.Serial)
		}
	}
	defDays := DefaultDeviceDays
	if kind == KindServer {
		defDays = DefaultServerDays
	}
	nb, na, warn, err := p.validity(o, defDays, iss.cert)
	if err != nil {
		return nil, err
	}
	serial, err := newSerialNotIn(st)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	switch kind {
	case KindDevice:
		tmpl.Subject = pkix.Name{CommonName: o.Name, OrganizationalUnit: o.Groups}
		if o.User != "" {
			tmpl.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: pki.OIDUserID, Value: o.User}}
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case KindServer:
		tmpl.Subject = pkix.Name{CommonName: o.Name}
		if net.ParseIP(o.Name) == nil {
			tmpl.DNSNames = append(tmpl.DNSNames, o.Name)
		} else {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(o.Name))
		}
		for _, d := range o.DNSNames {
			if !slices.Contains(tmpl.DNSNames, d) {
				tmpl.DNSNames = append(tmpl.DNSNames, d)
			}
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, o.IPs...)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	var pub crypto.PublicKey
	var key crypto.Signer
	if csr != nil {
		pub = csr.PublicKey
	} else {
		key, err = GenerateKey(o.Key)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		pub = key.Public()
	}
	if o.KeyOrigin != "" {
		if csr == nil || kind != KindDevice {
			return nil, errors.New("a key origin is vouched for only when signing a device's CSR (this CA made the key: it is a file)")
		}
		oid, err := pki.KeyOriginPolicy(o.KeyOrigin)
		if err != nil {
			return nil, err
		}
		if o.Attested {
			if o.KeyOrigin != pki.KeyOriginTPM || len(o.AKPublic) == 0 {
				return nil, errors.New("an attested key origin is a TPM's, with its attestation key")
			}
			oid = pki.KeyOriginAttestedPolicy()
			val, err := asn1.Marshal(o.AKPublic)
			if err != nil {
				return nil, err
			}
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: pki.OIDAttestationKey, Value: val})
		}
		tmpl.Policies = []x509.OID{oid}
	}
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	cert, err := createCert(tmpl, iss.cert, pub, iss.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	out := &Issued{Cert: cert}
	if warn != "" {
		out.Warnings = append(out.Warnings, warn)
	}
	sub := "devices"
	if kind == KindServer {
		sub = "servers"
	}
	if err := os.MkdirAll(p.Path(sub), 0o700); err != nil {
		return nil, err
	}
	// A gateway's certificate and key in a PKI shared with the gateway's
	// group are readable by that group (share.go); a device's never are.
	gid := -1
	if kind == KindServer {
		gid = shareGID(p.Dir)
		if err := shareDir(p.Path(sub), gid); err != nil {
			return nil, err
		}
	}
	out.CertPath = p.Path(sub, o.Name+".crt")
	if key != nil {
		out.KeyPath = p.Path(sub, o.Name+".key")
		if err := writeKey(out.KeyPath, key); err != nil {
			return nil, err
		}
		if err := shareKey(out.KeyPath, gid); err != nil {
			return nil, err
		}
		if gid >= 0 {
			out.KeyGroup = ShareGroup
		}
	}
	chain := encodeCert(cert)
	for _, c := range iss.chain {
		chain = append(chain, encodeCert(c)...)
	}
	if err := atomicfile.Write(out.CertPath, chain, 0o644); err != nil {
		return nil, err
	}
	out.Record = recordOf(cert, kind, now, csr != nil)
	if err := st.add(&out.Record); err != nil {
		return nil, err
	}
	return out, nil
}

func checkPublicKey(pub crypto.PublicKey) error {
	if k, ok := pub.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		return fmt.Errorf("RSA key of %d bits is too weak (want at least 2048)", k.N.BitLen())
	}
	return nil
}

func newSerialNotIn(st *store) (*big.Int, error) {
	for range 10 {
		s, err := NewSerial(nil)
		if err != nil {
			return nil, err
		}
		used, err := st.hasSerial(pki.FormatSerial(s))
		if err != nil {
			return nil, err
		}
		if !used {
			return s, nil
		}
	}
	return nil, errors.New("could not draw an unused serial")
}

func recordOf(c *x509.Certificate, kind string, now time.Time, fromCSR bool) Record {
	id := pki.IdentityOf(c)
	return Record{
		Serial: id.Serial, Kind: kind, Name: id.Device, User: id.User, Groups: id.Groups,
		Issuer: id.Issuer, Fingerprint: id.Fingerprint, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		IssuedAt: now.UTC(), FromCSR: fromCSR, KeyOrigin: id.KeyOrigin,
	}
}

// List returns the index records in issue order.
func (p *PKI) List() ([]Record, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	var recs []Record
	err := p.readIndex(func(st *store) (err error) {
		if st != nil {
			recs, err = st.all()
		}
		return err
	})
	return recs, err
}

// records returns the index records of kind and name, in issue order.
func (p *PKI) records(kind, name string) ([]Record, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	var recs []Record
	err := p.readIndex(func(st *store) (err error) {
		if st != nil {
			recs, err = st.byName(kind, name)
		}
		return err
	})
	return recs, err
}

// readIndex runs read on the index under the PKI's shared lock (st is nil
// when nothing was ever recorded). A legacy index.json is migrated first,
// under the exclusive lock.
func (p *PKI) readIndex(read func(st *store) error) error {
	if needsMigration(p.Dir) {
		unlock, err := p.lock(true)
		if err != nil {
			return err
		}
		if needsMigration(p.Dir) { // someone else may have done it meanwhile
			err = migrate(p.Dir)
		}
		unlock()
		if err != nil {
			return err
		}
	}
	unlock, err := p.lock(false)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(p.Path(indexDB)); errors.Is(err, fs.ErrNotExist) {
		return read(nil)
	}
	st, err := openStore(p.Dir, false, true)
	if err != nil {
		return err
	}
	defer st.Close()
	return read(st)
}
