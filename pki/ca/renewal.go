package ca

// Renewal and CA rotation (docs/renewal.md): the online issuer the
// gateways renew device certificates with, and the next CA with an overlap
// in which old and new are trusted together.
//
// Files:
//
//	D/renewal-issuer.crt, D/renewal-issuer.key
//	                    the online issuer: a CA with path length 0 and
//	                    clientAuth as its only EKU, signed by the root; its
//	                    key goes to the gateways (renewal.issuer_key)
//	D/previous/N/       the CA before rotation N: root.crt, root.key,
//	                    intermediate.*, renewal-issuer.*, and cross.crt (the
//	                    new root's subject and key, signed by this root)
//	D/previous/N/retired  written by "pki rotate --finish": the old CA has
//	                    left ca.crt and signs no more CRLs

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/renew"
)

// Kinds of CA certificate the renewal and rotation record in the index.
const (
	KindIssuer = "issuer" // an online issuer
	KindCross  = "cross"  // a cross-certificate of the next root
)

// Lifetimes (days).
const (
	// DefaultIssuerDays is an online issuer's lifetime.
	DefaultIssuerDays = 365
	// RenewedDeviceDays is the device lifetime `pki issue` and `pki
	// bundle` suggest when the PKI has an online issuer: the device renews
	// itself, so its first certificate only has to last until its first
	// session.
	RenewedDeviceDays = 7
)

// RenewalIssuerPaths are the online issuer's certificate and key files.
func (p *PKI) RenewalIssuerPaths() (certPath, keyPath string) {
	return p.Path("renewal-issuer.crt"), p.Path("renewal-issuer.key")
}

// HasRenewalIssuer reports whether the PKI has an online issuer: its
// devices renew themselves (short lifetimes are suggested).
func (p *PKI) HasRenewalIssuer() bool {
	c, _ := p.RenewalIssuerPaths()
	_, err := os.Stat(c)
	return err == nil
}

// IssuerOptions configures MakeIssuer.
type IssuerOptions struct {
	Name string  // CN; default the root's CN + " Online Issuer"
	Days int     // lifetime; default DefaultIssuerDays, cut at the root's expiry
	Key  KeyType // key type
}

// loadCA loads a CA certificate and its key, the key's permissions checked
// like any CA key (the issuing CA, the root, a previous generation).
func loadCA(certPath, keyPath string) (*issuer, error) {
	certs, err := pki.LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	if err := pki.CheckCAKeyPerm(keyPath); err != nil {
		return nil, err
	}
	data, err := pki.ReadPEMFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, err := pki.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if !publicKeyEqual(key.Public(), certs[0].PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match its certificate", keyPath)
	}
	return &issuer{cert: certs[0], key: key}, nil
}

// loadRoot loads the root and its key: operations that certify a CA need
// the root key, which is otherwise kept offline.
func (p *PKI) loadRoot() (*issuer, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	if _, err := os.Stat(p.Path("root.key")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the root key %s is not here: bring it back from offline storage for this, and take it away again after", p.Path("root.key"))
	}
	return loadCA(p.Path("root.crt"), p.Path("root.key"))
}

// MakeIssuer makes the online issuer the gateways renew device
// certificates with: a CA signed by the root, with path length 0 (it
// certifies no CA) and clientAuth as its only extended key usage (nothing
// it signs is accepted as a gateway), its own lifetime. An existing one is
// replaced (its certificates stay valid until they expire); Replaced says
// which serial it had.
func (p *PKI) MakeIssuer(o IssuerOptions) (is *Issued, replaced string, err error) {
	unlock, err := p.lock(true)
	if err != nil {
		return nil, "", err
	}
	defer unlock()
	root, err := p.loadRoot()
	if err != nil {
		return nil, "", err
	}
	if root.cert.MaxPathLenZero {
		return nil, "", fmt.Errorf("the root %q was made with path length 0 (before renewal existed), so it cannot certify an online issuer: make the next CA with `sallyport pki rotate`, then `sallyport pki issuer`", root.cert.Subject.CommonName)
	}
	cp, kp := p.RenewalIssuerPaths()
	if certs, err := pki.LoadCertificates(cp); err == nil {
		replaced = pki.FormatSerial(certs[0].SerialNumber)
	}
	st, err := p.openIndexLocked()
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	cert, key, err := p.newOnlineIssuer(root, o)
	if err != nil {
		return nil, "", err
	}
	if err := p.writeOnlineIssuer(cert, key, cp, kp); err != nil {
		return nil, "", err
	}
	r := recordOf(cert, KindIssuer, p.now(), false)
	if err := st.add(&r); err != nil {
		return nil, "", err
	}
	return &Issued{Record: r, Cert: cert, CertPath: cp, KeyPath: kp, KeyGroup: p.Shared()}, replaced, nil
}

// newOnlineIssuer signs an online issuer under root.
func (p *PKI) newOnlineIssuer(root *issuer, o IssuerOptions) (*x509.Certificate, crypto.Signer, error) {
	if o.Days <= 0 {
		o.Days = DefaultIssuerDays
	}
	if o.Name == "" {
		o.Name = strings.TrimSpace(root.cert.Subject.CommonName + " Online Issuer")
	}
	now := p.now()
	na := now.AddDate(0, 0, o.Days)
	if na.After(root.cert.NotAfter) {
		na = root.cert.NotAfter
	}
	key, err := GenerateKey(o.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer key: %w", err)
	}
	serial, err := NewSerial(nil)
	if err != nil {
		return nil, nil, err
	}
	subj := pkix.Name{CommonName: o.Name, Organization: root.cert.Subject.Organization}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subj, NotBefore: now.Add(-backdate), NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := createCert(tmpl, root.cert, key.Public(), root.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign the online issuer: %w", err)
	}
	if err := renew.CheckIssuer(cert); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// writeOnlineIssuer writes the issuer's files; in a PKI shared with the
// gateway's group the key is readable by that group (the gateway holds it).
func (p *PKI) writeOnlineIssuer(cert *x509.Certificate, key crypto.Signer, cp, kp string) error {
	if err := writeKey(kp, key); err != nil {
		return err
	}
	if err := shareKey(kp, shareGID(p.Dir)); err != nil {
		return err
	}
	return atomicfile.Write(cp, encodeCert(cert), 0o644)
}

// generation is one CA before a rotation, kept in previous/N.
type generation struct {
	dir     string
	n       int
	retired bool
}

var genRE = regexp.MustCompile(`^[0-9]+$`)

// generations lists the previous CAs, oldest first.
func (p *PKI) generations() ([]generation, error) {
	ents, err := os.ReadDir(p.Path("previous"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []generation
	for _, e := range ents {
		if !e.IsDir() || !genRE.MatchString(e.Name()) {
			continue
		}
		n, _ := strconv.Atoi(e.Name())
		g := generation{dir: p.Path("previous", e.Name()), n: n}
		if _, err := os.Stat(filepath.Join(g.dir, "retired")); err == nil {
			g.retired = true
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out, nil
}

// active is the generation still trusted beside the current CA (a
// rotation not finished), or nil.
func (p *PKI) activeGeneration() (*generation, error) {
	gens, err := p.generations()
	if err != nil {
		return nil, err
	}
	for i := range gens {
		if !gens[i].retired {
			return &gens[i], nil
		}
	}
	return nil, nil
}

// crlSigners are the CAs besides the issuing CA iss that sign a CRL too:
// the root when it is not iss and its key is here (it revokes the
// intermediate and the online issuer), and the CA of a rotation not yet
// finished (still trusted by the gateways).
func (p *PKI) crlSigners(iss *issuer) ([]*issuer, error) {
	var out []*issuer
	if _, err := os.Stat(p.Path("root.key")); err == nil && !iss.cert.Equal(mustRoot(p)) {
		root, err := loadCA(p.Path("root.crt"), p.Path("root.key"))
		if err != nil {
			return nil, err
		}
		out = append(out, root)
	}
	g, err := p.activeGeneration()
	if err != nil || g == nil {
		return out, err
	}
	for _, name := range []string{"intermediate", "root"} {
		cp, kp := filepath.Join(g.dir, name+".crt"), filepath.Join(g.dir, name+".key")
		if _, err := os.Stat(kp); err != nil {
			continue
		}
		c, err := loadCA(cp, kp)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func mustRoot(p *PKI) *x509.Certificate {
	certs, err := pki.LoadCertificates(p.Path("root.crt"))
	if err != nil {
		return nil
	}
	return certs[0]
}

// RotateOptions configures Rotate.
type RotateOptions struct {
	Name string  // the next root's CN; default the current one with " G2" (or the next number)
	Days int     // its lifetime; default DefaultRootDays
	Key  KeyType // its key type
}

// Rotation is what Rotate made.
type Rotation struct {
	Old, New   *x509.Certificate // the roots
	Cross      *x509.Certificate // the new root's subject and key, signed by the old root
	Issuer     *x509.Certificate // the new online issuer (nil when the PKI had none)
	Generation string            // where the old CA was kept
}

var genSuffix = regexp.MustCompile(` G([0-9]+)$`)

// nextName is the next root's CN: "X" -> "X G2", "X G2" -> "X G3".
func nextName(cn string) string {
	if m := genSuffix.FindStringSubmatch(cn); m != nil {
		n, _ := strconv.Atoi(m[1])
		return strings.TrimSuffix(cn, m[0]) + fmt.Sprintf(" G%d", n+1)
	}
	return cn + " G2"
}

// Rotate makes the next CA and starts the overlap: the current root (with
// its intermediate and online issuer) moves to previous/N, a new root (and
// a new intermediate and online issuer if the PKI had them) takes its
// place and signs everything from now on, and ca.crt carries old and new
// together with a cross-certificate (the new root's subject and key signed
// by the old root), which is what lets a laptop take the new root from a
// gateway during a renewal. Both CAs sign CRLs until FinishRotation.
func (p *PKI) Rotate(o RotateOptions) (*Rotation, error) {
	unlock, err := p.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if g, err := p.activeGeneration(); err != nil {
		return nil, err
	} else if g != nil {
		return nil, fmt.Errorf("a rotation is running (the previous CA in %s is still trusted): finish it first with `sallyport pki rotate --finish`", g.dir)
	}
	old, err := p.loadRoot()
	if err != nil {
		return nil, err
	}
	_, hadInter := os.Stat(p.Path("intermediate.crt"))
	hadIssuer := p.HasRenewalIssuer()
	if o.Name == "" {
		o.Name = nextName(old.cert.Subject.CommonName)
	}
	if o.Days <= 0 {
		o.Days = DefaultRootDays
	}
	if o.Name == old.cert.Subject.CommonName {
		return nil, fmt.Errorf("the next CA needs a name of its own (--name), not %q", o.Name)
	}
	gens, err := p.generations()
	if err != nil {
		return nil, err
	}
	n := 1
	if len(gens) > 0 {
		n = gens[len(gens)-1].n + 1
	}
	gdir := p.Path("previous", strconv.Itoa(n))
	st, err := p.openIndexLocked()
	if err != nil {
		return nil, err
	}
	defer st.Close()

	now := p.now()
	key, err := GenerateKey(o.Key)
	if err != nil {
		return nil, fmt.Errorf("rotate: root key: %w", err)
	}
	subj := pkix.Name{CommonName: o.Name, Organization: old.cert.Subject.Organization}
	rootTmpl := func() (*x509.Certificate, error) {
		serial, err := NewSerial(nil)
		return &x509.Certificate{SerialNumber: serial, Subject: subj, NotBefore: now.Add(-backdate), NotAfter: now.AddDate(0, 0, o.Days),
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, err
	}
	tmpl, err := rootTmpl()
	if err != nil {
		return nil, err
	}
	newRoot, err := createCert(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("rotate: root certificate: %w", err)
	}
	crossTmpl, err := rootTmpl()
	if err != nil {
		return nil, err
	}
	if crossTmpl.NotAfter.After(old.cert.NotAfter) {
		crossTmpl.NotAfter = old.cert.NotAfter
	}
	cross, err := createCert(crossTmpl, old.cert, key.Public(), old.key)
	if err != nil {
		return nil, fmt.Errorf("rotate: cross-certificate: %w", err)
	}
	next := &issuer{cert: newRoot, key: key}
	var records []*Record
	var inter *issuer
	if hadInter == nil {
		ikey, err := GenerateKey(o.Key)
		if err != nil {
			return nil, err
		}
		serial, err := NewSerial(nil)
		if err != nil {
			return nil, err
		}
		isubj := subj
		isubj.CommonName = o.Name + " Issuing CA"
		na := now.AddDate(0, 0, DefaultIntermediateDays)
		if na.After(newRoot.NotAfter) {
			na = newRoot.NotAfter
		}
		icert, err := createCert(&x509.Certificate{SerialNumber: serial, Subject: isubj, NotBefore: now.Add(-backdate), NotAfter: na,
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, newRoot, ikey.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("rotate: intermediate: %w", err)
		}
		inter = &issuer{cert: icert, key: ikey, chain: []*x509.Certificate{icert}}
		r := recordOf(icert, KindIntermediate, now, false)
		records = append(records, &r)
	}
	var onlineCert *x509.Certificate
	var onlineKey crypto.Signer
	if hadIssuer {
		if onlineCert, onlineKey, err = p.newOnlineIssuer(next, IssuerOptions{Key: o.Key}); err != nil {
			return nil, err
		}
		r := recordOf(onlineCert, KindIssuer, now, false)
		records = append(records, &r)
	}
	rc := recordOf(cross, KindCross, now, false)
	records = append(records, &rc)

	// Keep the old CA, then put the new one in its place.
	if err := os.MkdirAll(gdir, 0o700); err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	for _, f := range []string{"root.crt", "root.key", "intermediate.crt", "intermediate.key", "renewal-issuer.crt", "renewal-issuer.key"} {
		if err := os.Rename(p.Path(f), filepath.Join(gdir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("rotate: keep the old CA: %w", err)
		}
	}
	if err := atomicfile.Write(filepath.Join(gdir, "cross.crt"), encodeCert(cross), 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(p.Path("root.key"), key); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(p.Path("root.crt"), encodeCert(newRoot), 0o644); err != nil {
		return nil, err
	}
	issuing := next
	if inter != nil {
		if err := writeKey(p.Path("intermediate.key"), inter.key); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(p.Path("intermediate.crt"), encodeCert(inter.cert), 0o644); err != nil {
			return nil, err
		}
		issuing = inter
	}
	if onlineCert != nil {
		cp, kp := p.RenewalIssuerPaths()
		if err := p.writeOnlineIssuer(onlineCert, onlineKey, cp, kp); err != nil {
			return nil, err
		}
	}
	if err := p.writeBundle(); err != nil {
		return nil, err
	}
	if err := st.add(records...); err != nil {
		return nil, err
	}
	if _, err := p.writeCRL(st, issuing, DefaultCRLDays); err != nil {
		return nil, err
	}
	return &Rotation{Old: old.cert, New: newRoot, Cross: cross, Issuer: onlineCert, Generation: gdir}, nil
}

// FinishRotation ends the overlap: the previous CA leaves ca.crt and signs
// no more CRLs. Its files stay in previous/N (marked retired). Run it when
// no device holds a certificate of the old CA any more (`sallyport server
// status` counts devices per CA).
func (p *PKI) FinishRotation() (*x509.Certificate, error) {
	unlock, err := p.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	g, err := p.activeGeneration()
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, errors.New("no rotation is running (sallyport pki rotate starts one)")
	}
	old, err := pki.LoadCertificates(filepath.Join(g.dir, "root.crt"))
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(g.dir, "retired"), []byte(p.now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := p.writeBundle(); err != nil {
		return nil, err
	}
	iss, err := p.loadIssuer()
	if err != nil {
		return nil, err
	}
	st, err := p.openIndexLocked()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if _, err := p.writeCRL(st, iss, DefaultCRLDays); err != nil {
		return nil, err
	}
	return old[0], nil
}

// writeBundle writes ca.crt: the current root (and intermediate), then
// during a rotation the previous root (and intermediate) and the
// cross-certificate.
func (p *PKI) writeBundle() error {
	var b []byte
	add := func(path string) error {
		certs, err := pki.LoadCertificates(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, c := range certs {
			b = append(b, encodeCert(c)...)
		}
		return nil
	}
	for _, f := range []string{p.Path("root.crt"), p.Path("intermediate.crt")} {
		if _, err := os.Stat(f); err == nil {
			if err := add(f); err != nil {
				return err
			}
		}
	}
	g, err := p.activeGeneration()
	if err != nil {
		return err
	}
	if g != nil {
		for _, f := range []string{"root.crt", "intermediate.crt", "cross.crt"} {
			if _, err := os.Stat(filepath.Join(g.dir, f)); err == nil {
				if err := add(filepath.Join(g.dir, f)); err != nil {
					return err
				}
			}
		}
	}
	return atomicfile.Write(p.Path("ca.crt"), b, 0o644)
}

// caNames are the subjects of every CA this PKI has had (current and
// previous): a record issued by any of them can be revoked here.
func (p *PKI) caNames() map[string]bool {
	out := map[string]bool{}
	add := func(path string) {
		if certs, err := pki.LoadCertificates(path); err == nil {
			out[pki.NameString(certs[0].Subject)] = true
		}
	}
	for _, f := range []string{"root.crt", "intermediate.crt", "renewal-issuer.crt"} {
		add(p.Path(f))
	}
	gens, _ := p.generations()
	for _, g := range gens {
		for _, f := range []string{"root.crt", "intermediate.crt", "renewal-issuer.crt"} {
			add(filepath.Join(g.dir, f))
		}
	}
	return out
}

// TrustBundle loads ca.crt: every CA certificate the gateways trust now.
func (p *PKI) TrustBundle() ([]*x509.Certificate, error) {
	return pki.LoadCertificates(p.Path("ca.crt"))
}
