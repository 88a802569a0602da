package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/sallyport/sallyport/internal/userfile"
)

// CheckResult is what `sallyport server check` reports about a config that
// loads.
type CheckResult struct {
	Config   *Config
	Policies int
	CAs      int
	CRL      string // "number N, next update T" or "none"
	// Renewal describes the online issuer ("off" without [renewal]).
	Renewal  string
	Warnings []string // what a start or reload would log about it
	// CheckedAs is the user the files were also read as ("" when only as
	// the caller) and why that user (see CheckCommand).
	CheckedAs string
	// Note is worth telling the admin about how it was checked.
	Note string
}

// Check validates the config at path and every file it names (gateway
// certificate and key, with the key's permissions; client CA; CRL; policies,
// allowlists, static devices; that the lease file, if present, is a
// regular file) exactly as a start or a reload loads them,
// without opening a TUN device, a socket or anything else, like `nginx -t`.
// A reload runs the same load first and keeps the running configuration
// when it fails.
func Check(path string) (*CheckResult, error) { return CheckWith(path, CheckOptions{}) }

// CheckWith is Check with the files named in o.Credentials read from where
// systemd would load them.
func CheckWith(path string, o CheckOptions) (*CheckResult, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	read := *cfg // the files as loaded; cfg keeps the paths as written
	for _, p := range []*string{&read.TLS.Cert, &read.TLS.Key, &read.TLS.ClientCA, &read.TLS.CRL, &read.Renewal.IssuerCert, &read.Renewal.IssuerKey, &read.Renewal.CABundle, &read.Tunnel.LeaseFile} {
		if src, ok := o.Credentials[*p]; ok && *p != "" {
			*p = src
		}
	}
	t, err := loadTrust(&read, nil)
	if err != nil {
		return nil, err
	}
	r := &CheckResult{Config: cfg, Policies: len(cfg.Policies), CAs: len(t.caCerts), CRL: "none", Renewal: "off", Warnings: t.warnings}
	if rn := t.renew; rn != nil {
		r.Renewal = fmt.Sprintf("issuer %q until %s, lifetime %s, renew at %.2f of it, record %s", rn.issuer.Cert().Subject.CommonName,
			fmtTime(rn.issuer.Cert().NotAfter), rn.lifetime, rn.renewAt, cfg.Renewal.Record)
	}
	if w := cfg.Metrics.wildcardWarning(); w != "" {
		r.Warnings = append(r.Warnings, w)
	}
	// Only what a start would stop on is an error; a lease file this user
	// may not read (check run as another user) is the start's business.
	switch err := userfile.Check(read.Tunnel.LeaseFile, maxLeaseFile); {
	case errors.Is(err, userfile.ErrTooLarge):
		r.Warnings = append(r.Warnings, fmt.Sprintf("the lease file %s is larger than its cap: a start keeps it aside and devices may get new addresses", cfg.Tunnel.LeaseFile))
	case errors.Is(err, userfile.ErrNotRegular):
		return nil, fmt.Errorf("config %s: key \"tunnel.lease_file\": %w", path, err)
	}
	if t.crl != nil {
		r.CRL = fmt.Sprintf("number %v, next update %s", t.crlNumber(), fmtTime(t.crl.NextUpdate()))
		if t.crlStaleAt(time.Now()) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("the CRL %s is stale (next update %s): with tls.crl_stale = %q new sessions are %s",
				t.crlPath, fmtTime(t.crl.NextUpdate()), t.crlStale, map[bool]string{true: "admitted", false: "refused"}[t.crlStale == CRLStaleWarn]))
		}
	}
	if t.cert.Leaf != nil && time.Until(t.cert.Leaf.NotAfter) < 30*24*time.Hour {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the gateway certificate %s expires %s", cfg.TLS.Cert, fmtTime(t.cert.Leaf.NotAfter)))
	}
	return r, nil
}

// load reads the config at path and everything it names: the one loading
// step of Check and Reload. prev is the trust in force (nil when none).
func load(path string, prev *trust) (*Config, *trust, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	t, err := loadTrust(cfg, prev)
	if err != nil {
		return nil, nil, err
	}
	return cfg, t, nil
}
