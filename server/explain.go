package server

// The steps of the trust decision besides the policies, for `sallyport
// policy explain` and `policy test` (docs/policy.md): the leaf is not a
// CA, the allowlists, the hardware-key rule and the CRL, run by the same methods trust.decide runs, so an explanation's
// "allow" means the device would get in, not only that a rule covers the
// destination.

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
)

// ExplainPolicies compiles cfg's policies as the gateway does, with the
// gateway's own addresses that cfg names (tunnel gateway addresses,
// listeners) and, when local is set, this machine's interface addresses:
// right when run on the gateway itself, off for a CI machine.
func ExplainPolicies(cfg *Config, local bool) (*policy.Set, *policy.Own, error) {
	addrs := configOwnAddrs(cfg)
	if local {
		addrs = append(addrs, hostAddrs()...)
	}
	own := policy.NewOwn(addrs...)
	set, err := policy.CompileOwn(cfg.Policies, own)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", cfg.Path, err)
	}
	return set, own, nil
}

// AdmissionGates returns the gates of cfg: its allowlists and, when
// crlFile (or else tls.crl) names one, the CRL, verified against
// tls.client_ca as the gateway loads it.
func AdmissionGates(cfg *Config, crlFile string) ([]policy.Gate, error) {
	t := &trust{crlStale: cfg.TLS.CRLStale}
	if err := t.loadAllowlists(cfg); err != nil {
		return nil, err
	}
	set, err := policy.Compile(cfg.Policies)
	if err != nil {
		return nil, err
	}
	gates := []policy.Gate{certificateGate, t.allowlistGate, hardwareKeyGate(set)}
	if crlFile == "" {
		crlFile = cfg.TLS.CRL
	}
	if crlFile == "" {
		return append(gates, func(pki.Identity, []*x509.Certificate) policy.GateResult {
			return policy.GateResult{Name: "revocation", OK: true, Line: "not checked: no CRL (tls.crl is unset; --crl FILE checks one)"}
		}), nil
	}
	cas, err := pki.LoadCertificates(cfg.TLS.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("load tls.client_ca %s (to verify the CRL): %w", cfg.TLS.ClientCA, err)
	}
	if t.crl, err = pki.LoadCRL(crlFile, cas); err != nil {
		return nil, err
	}
	t.crlPath = crlFile
	return append(gates, t.revocationGate), nil
}

// certificateGate is checkNotCA as a gate: a CA certificate given as
// the device's (ca.crt for alice.crt, or a chain file with the CA first)
// is refused by the gateway whatever the policies say, and the line says
// so plainly.
func certificateGate(id pki.Identity, certs []*x509.Certificate) policy.GateResult {
	g := policy.GateResult{Name: "certificate", OK: true}
	if certs == nil {
		g.Line = "not checked: no certificate (--cert FILE checks one)"
		return g
	}
	if err := checkNotCA(certs[0], id); err != nil {
		g.OK = false
		g.Line = fmt.Sprintf("refused, the gateway answers %s: %v; give the device's own certificate (pki issue writes devices/NAME.crt)", classify(err).reason, classify(err).err)
		return g
	}
	g.Line = "a device certificate (not a CA)"
	return g
}

// allowlistGate is checkAllowlists as a gate.
func (t *trust) allowlistGate(id pki.Identity, certs []*x509.Certificate) policy.GateResult {
	g := policy.GateResult{Name: "allowlist", OK: true}
	switch err := t.checkAllowlists(id); {
	case !t.hasAllowlists():
		g.Line = "none (tls.allow_fingerprints and tls.allow_subjects are unset)"
	case err == nil:
		g.Line = fmt.Sprintf("passes (fingerprint %s / subject %q)", orDash(id.Fingerprint), id.Subject)
	default:
		g.OK = false
		g.Line = fmt.Sprintf("refused, the gateway answers %s: %v", classify(err).reason, classify(err).err)
		if certs == nil && len(t.allowFP) > 0 {
			g.Line += " (without --cert the fingerprint is unknown)"
		}
	}
	return g
}

// hardwareKeyGate is checkHardwareKey as a gate: a policy that matches
// may demand a key held in hardware, which only a certificate can show.
func hardwareKeyGate(set *policy.Set) policy.Gate {
	return func(id pki.Identity, certs []*x509.Certificate) policy.GateResult {
		g := policy.GateResult{Name: "hardware key", OK: true}
		grant := set.Lookup(id)
		switch err := checkHardwareKey(grant, id); {
		case grant == nil || grant.RequireHardwareKey == "":
			g.Line = "not required by the matching policies"
		case err == nil:
			g.Line = fmt.Sprintf("required by policy %q; the certificate records a key in %s", grant.RequireHardwareKey, id.KeyOrigin)
		default:
			g.OK = false
			g.Line = fmt.Sprintf("refused, the gateway answers %s: %v", classify(err).reason, classify(err).err)
			if certs == nil {
				g.Line += " (without --cert the key origin is unknown)"
			}
		}
		return g
	}
}

// revocationGate is checkRevoked and checkCRLFresh as a gate: every
// certificate of the file but a self-signed one (the device and the
// intermediates it sends), and whether the CRL is stale now.
func (t *trust) revocationGate(id pki.Identity, certs []*x509.Certificate) policy.GateResult {
	g := policy.GateResult{Name: "revocation", OK: true}
	if certs == nil {
		g.Line = fmt.Sprintf("not checked: no certificate (give --cert to check the CRL %s)", t.crlPath)
		return g
	}
	var chain []*x509.Certificate
	for _, c := range certs {
		if c.CheckSignatureFrom(c) != nil { // not a root
			chain = append(chain, c)
		}
	}
	err := t.checkRevoked(chain, id)
	if err == nil {
		err = t.checkCRLFresh(time.Now(), id)
	}
	if err != nil {
		g.OK = false
		g.Line = fmt.Sprintf("refused, the gateway answers %s: %v", classify(err).reason, classify(err).err)
		return g
	}
	g.Line = fmt.Sprintf("not revoked (CRL %s, number %v, next update %s)", t.crlPath, orDash(fmt.Sprint(t.crlNumber())), fmtTime(t.crl.NextUpdate()))
	return g
}

func orDash(s string) string {
	if s == "" || s == "<nil>" {
		return "-"
	}
	return s
}
