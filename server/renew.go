package server

// Renewal inside the session (ARCHITECTURE.md, "Renewal"; docs/renewal.md).
//
// A device that negotiated tunnel.CapRenew sends a FrameRenew at renew_at
// of its certificate's lifetime: a CSR signed by a new key and bound to
// this TLS session (pki.CheckRenewalRequest). The gateway then
//  1. decides trust for the certificate the session holds, afresh (the
//     chain rebuilt, for a new session: a revoked, expired, refused or
//     stale-CRL device gets nothing; an expired certificate never renews);
//  2. checks the device's chain ends at a CA of renewal.ca_bundle;
//  3. re-issues the verified identity for the request's key only
//     (pki/renew Issuer.Reissue: nothing else of the request is read);
//  4. decides trust for the new chain (a renewal the gateway itself would
//     refuse, say because a policy matches the old fingerprint, is not
//     sent);
//  5. moves the live session to the new certificate (its expiry, status,
//     re-checks), records the issuance, logs one line and counts it;
//  6. answers with the chain and the CA bundle.
// Every refusal is one FrameRenewed with a reason; the session stays.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/renew"
	"github.com/sallyport/sallyport/tunnel"
)

// renewer is the online issuer as configured: part of the trust snapshot,
// so a reload swaps it with the CAs and the CRL it must agree with.
type renewer struct {
	issuer    *renew.Issuer
	lifetime  time.Duration
	renewAt   float64
	bundle    []*x509.Certificate // renewal.ca_bundle
	bundleDER [][]byte
}

// loadRenewer reads the [renewal] files: the issuer (checked like the
// gateway key, and against the rules of an online issuer), and the CA
// bundle. The issuer must chain to a CA of client_ca, or every certificate
// it issued would be refused.
func loadRenewer(c *Config, caPool *x509.CertPool) (*renewer, []string, error) {
	r := &c.Renewal
	is, err := renew.Load(r.IssuerCert, r.IssuerKey)
	if err != nil {
		return nil, nil, fmt.Errorf("renewal: %w", err)
	}
	bundle, err := pki.LoadCertificates(r.CABundle)
	if err != nil {
		return nil, nil, fmt.Errorf("load renewal.ca_bundle %s: %w", r.CABundle, err)
	}
	if len(bundle) > tunnel.MaxRenewCAs {
		return nil, nil, fmt.Errorf("renewal.ca_bundle %s holds %d certificates; at most %d are sent to laptops", r.CABundle, len(bundle), tunnel.MaxRenewCAs)
	}
	rn := &renewer{issuer: is, lifetime: r.Lifetime, renewAt: r.RenewAt, bundle: bundle}
	for _, b := range bundle {
		if !b.IsCA || !b.BasicConstraintsValid {
			return nil, nil, fmt.Errorf("renewal.ca_bundle %s: %q is not a CA certificate", r.CABundle, b.Subject.CommonName)
		}
		rn.bundleDER = append(rn.bundleDER, b.Raw)
	}
	if len(is.Chain()) > tunnel.MaxRenewCerts-1 {
		return nil, nil, fmt.Errorf("renewal.issuer_cert %s holds %d certificates; a renewed chain carries at most %d", r.IssuerCert, len(is.Chain()), tunnel.MaxRenewCerts-1)
	}
	now := time.Now()
	inter := pki.NewPool(is.Chain()[1:])
	if _, err := is.Cert().Verify(x509.VerifyOptions{Roots: caPool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("renewal.issuer_cert %s does not chain to a CA of tls.client_ca (%w); every certificate it issued would be refused", r.IssuerCert, err)
	}
	var warn []string
	if left := is.Cert().NotAfter.Sub(now); left < 2*r.Lifetime {
		warn = append(warn, fmt.Sprintf("the renewal issuer %s expires %s: certificates it renews are cut short; make the next one (sallyport pki issuer) and install it",
			r.IssuerCert, fmtTime(is.Cert().NotAfter)))
	}
	if len(c.TLS.AllowFingerprints) > 0 {
		warn = append(warn, "tls.allow_fingerprints pins certificates, and every renewal makes a new one: renewals of pinned devices are refused (pin by subject with tls.allow_subjects)")
	}
	for _, d := range c.Devices {
		if d.Fingerprint != "" {
			warn = append(warn, fmt.Sprintf("[[device]] fingerprint %.16s... reserves an address for one certificate; after a renewal the device gets a pool address (use cn)", d.Fingerprint))
		}
	}
	for _, p := range c.Policies {
		if len(p.Match.Fingerprint) > 0 || len(p.Match.Serial) > 0 || len(p.Match.Issuer) > 0 {
			warn = append(warn, fmt.Sprintf("policy %q matches by fingerprint, serial or issuer, which a renewal changes: renewals its devices would not match are refused", p.Name))
		}
	}
	return rn, warn, nil
}

// renews reports whether a device with this verified chain may renew: its
// trust anchor is a CA of the bundle the gateway sends to laptops.
func (rn *renewer) renews(chain []*x509.Certificate) bool {
	anchor := chain[len(chain)-1]
	for _, b := range rn.bundle {
		if bytes.Equal(b.Raw, anchor.Raw) {
			return true
		}
	}
	return false
}

// minRenewGap is the shortest time between two renewals of one session:
// a tenth of the lifetime, at most a minute.
func (rn *renewer) minRenewGap() time.Duration { return min(time.Minute, rn.lifetime/10) }

// sessionCert is the certificate a session holds now: the one of its
// handshake until a renewal moves it to the new one.
type sessionCert struct {
	id   pki.Identity
	peer []*x509.Certificate // leaf first, as the device sent them (or as the gateway issued them)
}

// renewalState is a session's part of renewal.
type renewalState struct {
	offered  bool         // tunnel.CapRenew negotiated
	last     atomic.Int64 // unix nanos of the last renewal
	count    atomic.Int32 // renewals in this session
	inFlight atomic.Bool
	moved    chan struct{} // a renewal moved the session: routineTimers re-arms the expiry
}

// renewGaps remembers when each device (by the lineage its renewals
// carry) last renewed on this gateway, so that connecting again does not
// buy another renewal within the gap: the session's own memory
// (renewalState.last) ends with the session. Entries older than the gap
// are swept once a gap, so it holds about the renewals of the last minute.
type renewGaps struct {
	mu    sync.Mutex
	last  map[string]time.Time
	swept time.Time
}

// recent reports how long ago key renewed, when that is less than gap.
func (g *renewGaps) recent(key string, now time.Time, gap time.Duration) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.last[key]
	if !ok || now.Sub(t) >= gap {
		return 0, false
	}
	return now.Sub(t), true
}

// note records that key renewed at now.
func (g *renewGaps) note(key string, now time.Time, gap time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]time.Time{}
	}
	if now.Sub(g.swept) >= gap {
		for k, t := range g.last {
			if now.Sub(t) >= gap {
				delete(g.last, k)
			}
		}
		g.swept = now
	}
	g.last[key] = now
}

// lineageKey names a device across its renewals: its lineage's
// enrollment serial and issuer.
func lineageKey(l pki.Lineage) string {
	return pki.FormatSerial(l.Serial) + "\x00" + string(l.RawIssuer)
}

// renewJournal is the issuance record, opened on the first renewal.
type renewJournal struct {
	mu   sync.Mutex
	path string
	j    *renew.Journal
}

func (rj *renewJournal) append(path string, r renew.Record) error {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	if rj.j == nil || rj.path != path {
		if rj.j != nil {
			_ = rj.j.Close()
			rj.j = nil
		}
		j, err := renew.OpenJournal(path)
		if err != nil {
			return err
		}
		rj.j, rj.path = j, path
	}
	return rj.j.Append(r)
}

func (rj *renewJournal) close() {
	rj.mu.Lock()
	defer rj.mu.Unlock()
	if rj.j != nil {
		_ = rj.j.Close()
		rj.j = nil
	}
}

// renewRefusal is a renewal the gateway does not grant.
type renewRefusal struct {
	reason tunnel.Reason
	retry  time.Duration // 0: the laptop's own schedule
	err    error
}

func (e *renewRefusal) Error() string { return string(e.reason) + ": " + e.err.Error() }

// onRenew answers one FrameRenew. Only a malformed frame, or one from a
// device that did not negotiate renewal, is a protocol error that ends the
// session; a refused renewal is an answer. The renewal itself runs on a
// goroutine of its own (owned by the server's WaitGroup), at most
// renewSlots at once gateway-wide, so the session's reader gives its
// stream buffer back to the pool at once and a storm of renewals costs
// CPU in bounded parallel, not a buffer per waiting session.
func (ss *session) onRenew(payload []byte) error {
	if !ss.renew.offered {
		return fmt.Errorf("%w: renew frame from a device that did not negotiate %q", tunnel.ErrProtocol, tunnel.CapRenew)
	}
	req, err := tunnel.DecodeRenewRequest(payload) // copies what it keeps: the payload is the reader's
	if err != nil {
		return fmt.Errorf("renew frame from device: %w", err)
	}
	if !ss.renew.inFlight.CompareAndSwap(false, true) {
		return ss.sendRenewReply(ss.renewRefused(&renewRefusal{tunnel.ReasonRenewTooSoon, 0, errors.New("a renewal of this session is in progress")}))
	}
	srv := ss.srv
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		select {
		case srv.renewSlots <- struct{}{}:
		case <-ss.done:
			ss.renew.inFlight.Store(false)
			return
		}
		reply := ss.renewNow(req, time.Now())
		<-srv.renewSlots
		// Done before the answer leaves: the device may ask again as
		// soon as it has read it.
		ss.renew.inFlight.Store(false)
		if err := ss.sendRenewReply(reply); err != nil {
			ss.closeWrite(err)
		}
	}()
	return nil
}

// sendRenewReply writes one FrameRenewed.
func (ss *session) sendRenewReply(reply tunnel.RenewReply) error {
	b, err := tunnel.EncodeRenewReply(reply)
	if err == nil {
		err = ss.w.WriteControl(tunnel.FrameRenewed, b)
	}
	if err != nil {
		return fmt.Errorf("send renewal answer: %w", err)
	}
	return nil
}

// renewNow runs one renewal (see the file comment) and returns the answer.
// The caller holds the session's renew.inFlight.
func (ss *session) renewNow(req tunnel.RenewRequest, now time.Time) tunnel.RenewReply {
	start := time.Now()
	prev := ss.cert.Load().peer[0]
	cert, chain, err := ss.renewCert(req.CSR, req.Attestation, now)
	if err != nil {
		var rr *renewRefusal
		if !errors.As(err, &rr) {
			rr = &renewRefusal{tunnel.ReasonRenewUnavailable, time.Hour, err}
		}
		return ss.renewRefused(rr)
	}
	srv := ss.srv
	ss.renew.last.Store(now.UnixNano())
	ss.renew.count.Add(1)
	srv.meters.renewed(time.Since(start))
	rec := renew.RecordOf(cert, prev, now)
	if err := srv.journal.append(srv.config().Renewal.Record, rec); err != nil {
		ss.logger().Error("renewal not recorded in the issuance record", "record", srv.config().Renewal.Record, "err", err)
	}
	ss.logger().Info("certificate renewed", "old_serial", pki.FormatSerial(prev.SerialNumber), "new_serial", rec.Serial,
		"not_after", rec.NotAfter.Format(time.RFC3339), "lineage", rec.Lineage, "issuer", rec.Issuer)
	reply := tunnel.RenewReply{CAs: srv.trustNow().renewBundle()}
	for _, c := range chain {
		reply.Certs = append(reply.Certs, c.Raw)
	}
	return reply
}

// renewBundle is the CA bundle sent with a renewal (nil without renewal).
func (t *trust) renewBundle() [][]byte {
	if t.renew == nil {
		return nil
	}
	return t.renew.bundleDER
}

// renewRefused logs and counts a refused renewal and makes its answer.
func (ss *session) renewRefused(rr *renewRefusal) tunnel.RenewReply {
	ss.srv.meters.renewRefused(rr.reason)
	level := slog.LevelWarn
	if rr.reason == tunnel.ReasonRenewTooSoon {
		level = slog.LevelInfo
	}
	ss.logger().Log(context.Background(), level, "certificate renewal refused", "reason", rr.reason, "error", rr.err.Error())
	reply := tunnel.RenewReply{Reason: string(rr.reason)}
	if rr.retry > 0 {
		// Spread the retries of a fleet refused at once (a stale CRL).
		reply.RetryAfter = int((rr.retry + rand.N(rr.retry/4+1)) / time.Second)
		reply.RetryAfter = min(reply.RetryAfter, int(tunnel.MaxRetryAfter/time.Second))
	}
	return reply
}

// renewCert issues the new certificate for the request and moves the
// session to it; it returns the certificate and the chain to send.
func (ss *session) renewCert(csrDER, attestation []byte, now time.Time) (*x509.Certificate, []*x509.Certificate, error) {
	t := ss.srv.trustNow()
	rn := t.renew
	if rn == nil {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewUnavailable, 6 * time.Hour, errors.New("renewal is not configured on this gateway any more")}
	}
	if last := ss.renew.last.Load(); last != 0 && now.Sub(time.Unix(0, last)) < rn.minRenewGap() {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewTooSoon, rn.minRenewGap(), fmt.Errorf("renewed %s ago; at most one renewal every %s", now.Sub(time.Unix(0, last)).Round(time.Second), rn.minRenewGap())}
	}
	if ss.tlsState == nil {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewUnavailable, 0, errors.New("no connection to bind the renewal to")}
	}
	binding, err := pki.RenewalBinding(ss.tlsState())
	if err != nil {
		return nil, nil, err
	}
	csr, err := pki.CheckRenewalRequest(csrDER, binding)
	if err != nil {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewInvalid, 0, err}
	}
	cur := ss.cert.Load()
	if pki.SamePublicKey(csr.PublicKey, cur.peer[0].PublicKey) {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewInvalid, 0, errors.New("the request's key is the key of the certificate in use; a renewal takes a new key")}
	}
	// 1. The full trust decision on the certificate in use, chain rebuilt.
	v, err := t.decide(cur.peer, nil, now, forNewSession)
	if err != nil {
		return nil, nil, refusedInUse(err)
	}
	// 2. Only devices of the CAs laptops are told to trust.
	if !rn.renews(v.chain) {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewUnavailable, 24 * time.Hour, fmt.Errorf("the device's chain ends at %q, a CA outside renewal.ca_bundle", v.chain[len(v.chain)-1].Subject.CommonName)}
	}
	// At most once a gap per device on this gateway, whichever session
	// asks: by the lineage the renewal will carry (a lineage extension
	// another CA signed names no one: NextLineage).
	l, err := renew.NextLineage(v.chain)
	if err != nil {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewUnavailable, 24 * time.Hour, err}
	}
	key := lineageKey(l)
	if ago, ok := ss.srv.renewGaps.recent(key, now, rn.minRenewGap()); ok {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewTooSoon, rn.minRenewGap() - ago, fmt.Errorf("the device renewed %s ago on another session; at most one renewal every %s", ago.Round(time.Second), rn.minRenewGap())}
	}
	// 3. The verified identity, the request's key. A certificate whose
	// TPM origin was attested keeps it only when the same attestation key
	// certified the new key in that TPM (pki/hwkey); otherwise the renewed
	// certificate says nothing about where its key lives, and a policy
	// that requires a hardware key refuses it in step 4.
	reissue := rn.issuer.Reissue
	if ak := pki.AttestationKeyOf(v.chain[0]); len(attestation) > 0 && ak != nil && pki.KeyOriginAttested(v.chain[0]) {
		if err := hwkey.VerifyRenewalAttestation(ak, attestation, csr.PublicKey); err != nil {
			return nil, nil, &renewRefusal{tunnel.ReasonRenewInvalid, 0, fmt.Errorf("the request's TPM attestation does not verify: %w", err)}
		}
		reissue = rn.issuer.ReissueAttested
	}
	cert, err := reissue(v.chain, csr.PublicKey, now, rn.lifetime)
	if err != nil {
		return nil, nil, &renewRefusal{tunnel.ReasonRenewUnavailable, time.Hour, err}
	}
	chain := append([]*x509.Certificate{cert}, rn.issuer.Chain()...)
	// 4 and 5, against the trust in force when the session moves.
	if err := ss.moveTo(chain, t, now); err != nil {
		return nil, nil, err
	}
	ss.srv.renewGaps.note(key, now, rn.minRenewGap())
	return cert, chain, nil
}

// refusedInUse is the answer to a renewal whose certificate in use the
// trust decision refuses: the decision's own reason.
func refusedInUse(err error) error {
	var r *refusal
	if !errors.As(err, &r) {
		return err
	}
	retry := time.Duration(0)
	if r.reason == tunnel.ReasonCRLStale {
		retry = 10 * time.Minute
	}
	return &renewRefusal{r.reason, retry, r.err}
}

// moveTo decides trust for the renewed chain and makes it the session's
// certificate. t is the trust that decided for the certificate in use
// (step 1). Like register, it decides again if a reload stored new trust
// meanwhile, for the certificate in use as well as for the new one: the
// reload is about to re-check the session, and a device it refuses must
// not leave with a new certificate that passes (a new serial, say, where
// the old one was revoked). certMu orders it with recheckSessions, so a
// reload re-checks either the old certificate (and the move then decides
// with the new trust) or the new one.
func (ss *session) moveTo(chain []*x509.Certificate, t *trust, now time.Time) error {
	ss.certMu.Lock()
	defer ss.certMu.Unlock()
	decided := t
	for {
		if t != decided {
			if _, err := t.decide(ss.cert.Load().peer, nil, now, forNewSession); err != nil {
				return refusedInUse(err)
			}
			decided = t
		}
		nv, err := t.decide(chain, nil, now, forNewSession)
		if err != nil {
			var r *refusal
			if errors.As(err, &r) {
				reason := tunnel.ReasonRenewUnavailable
				if r.reason == tunnel.ReasonHardwareKey {
					// The new key's home is unproven (no TPM evidence):
					// say so, the device must be enrolled again.
					reason = tunnel.ReasonHardwareKey
				}
				return &renewRefusal{reason, 24 * time.Hour, fmt.Errorf("the renewed certificate would itself be refused (%s): %w", r.reason, r.err)}
			}
			return err
		}
		if cur := ss.srv.trustNow(); cur != t {
			t = cur
			continue
		}
		select {
		case <-ss.done:
			return &renewRefusal{tunnel.ReasonRenewUnavailable, 0, errors.New("the session ended")}
		default:
		}
		ss.cert.Store(&sessionCert{id: nv.id, peer: chain})
		ss.setCertLog(nv.id)
		ss.verdict.Store(&nv)
		ss.setGrant(nv.grant)
		select {
		case ss.renew.moved <- struct{}{}:
		default:
		}
		return nil
	}
}
