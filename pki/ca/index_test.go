package ca

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	bolt "go.etcd.io/bbolt"
)

func newTestPKI(t *testing.T) *PKI {
	t.Helper()
	p := New(t.TempDir())
	if err := p.Init(InitOptions{Key: KeyEd25519, Intermediate: true}); err != nil {
		t.Fatal(err)
	}
	return p
}

func serialsOf(t *testing.T, p *PKI) []string {
	t.Helper()
	recs, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range recs {
		s = append(s, r.Serial)
	}
	return s
}

func TestIndexIssueListRevoke(t *testing.T) {
	p := newTestPKI(t)
	a, err := p.IssueDevice(IssueOptions{Name: "a", Key: KeyEd25519, User: "ann", Groups: []string{"eng"}})
	if err != nil {
		t.Fatal(err)
	}
	// An expired certificate of b, then a valid one: both are b's.
	bOld, err := p.IssueDevice(IssueOptions{Name: "b", Key: KeyEd25519, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	bNew, err := p.IssueDevice(IssueOptions{Name: "b", Key: KeyEd25519})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "b", Key: KeyEd25519}); err == nil || !strings.Contains(err.Error(), "already has a valid certificate (serial "+bNew.Record.Serial) {
		t.Errorf("second valid certificate for b: %v", err)
	}
	srv, err := p.IssueServer(IssueOptions{Name: "b", Key: KeyEd25519}) // same name, other kind
	if err != nil {
		t.Fatal(err)
	}
	got := serialsOf(t, p)
	want := []string{got[0], a.Record.Serial, bOld.Record.Serial, bNew.Record.Serial, srv.Record.Serial} // got[0]: the intermediate
	if !slices.Equal(got, want) {
		t.Fatalf("list order %v, want %v", got, want)
	}
	res, err := p.Revoke("", "b", "keyCompromise", 0)
	if err != nil || len(res) != 2 || res[0].Record.Serial != bOld.Record.Serial || res[1].Record.Serial != bNew.Record.Serial {
		t.Fatalf("revoke device b: %+v, %v", res, err)
	}
	res, err = p.Revoke(strings.ToUpper(bNew.Record.Serial), "", "", 0)
	if err != nil || len(res) != 1 || !res[0].Already {
		t.Errorf("revoke b again by serial: %+v, %v", res, err)
	}
	if _, err := p.Revoke("abcdef0123", "", "", 0); err == nil || !strings.Contains(err.Error(), "not in this PKI's index") {
		t.Errorf("unknown serial: %v", err)
	}
	if _, err := p.Revoke("", "nobody", "", 0); err == nil {
		t.Error("revoking a device with no certificate succeeded")
	}
	rl, err := p.LoadRevocations()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Issued{a, bOld, bNew, srv} {
		want := c == bOld || c == bNew // the server "b" is not the device "b"
		if got, _ := rl.Revoked(c.Cert); got != want {
			t.Errorf("%s %s revoked in CRL = %v, want %v", c.Record.Kind, c.Record.Name, got, want)
		}
	}
	// b may have a new certificate now that the old ones are revoked.
	if _, err := p.IssueDevice(IssueOptions{Name: "b", Key: KeyEd25519}); err != nil {
		t.Errorf("reissue after revoke: %v", err)
	}
	recs, _ := p.List()
	for _, r := range recs {
		if wantRev := r.Serial == bOld.Record.Serial || r.Serial == bNew.Record.Serial; r.Revoked() != wantRev || (wantRev && r.Reason != "keyCompromise") {
			t.Errorf("record %s %s: revoked %v reason %q", r.Kind, r.Name, r.Revoked(), r.Reason)
		}
	}
}

// writeLegacy makes p look like a PKI an older release kept: index.json
// and no index.db.
func writeLegacy(t *testing.T, p *PKI, ix *Index) []byte {
	t.Helper()
	data, err := json.MarshalIndent(ix, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Path(legacyIndex), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p.Path(indexDB)); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestMigrateLegacyIndex(t *testing.T) {
	p := newTestPKI(t)
	iss, err := p.IssuerCert()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	rec := func(serial, name string) Record {
		return Record{Serial: serial, Kind: KindDevice, Name: name, Issuer: iss.Subject.String(), NotBefore: now, NotAfter: now.AddDate(1, 0, 0), IssuedAt: now}
	}
	old := Index{Version: 1, CRLNumber: 7, Certs: []Record{rec("a1", "alice"), rec("b2", "bob"), rec("c3", "carol")}}
	old.Certs[1].RevokedAt, old.Certs[1].Reason = now, "superseded"
	data := writeLegacy(t, p, &old)

	recs, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Name != "alice" || !recs[1].Revoked() || recs[1].Reason != "superseded" || recs[2].Serial != "c3" {
		t.Fatalf("migrated records: %+v", recs)
	}
	if _, err := os.Stat(p.Path(legacyIndex)); !os.IsNotExist(err) {
		t.Errorf("index.json still there after migration: %v", err)
	}
	if kept, err := os.ReadFile(p.Path(migratedIndex)); err != nil || string(kept) != string(data) {
		t.Errorf("index.json.migrated: %v", err)
	}
	// The migrated index keeps working: the CRL number continues from the
	// old one and lists the old revocation, revoke by device finds records.
	crl, err := p.WriteCRL(0)
	if err != nil {
		t.Fatal(err)
	}
	if crl.Number.Int64() < 8 || len(crl.RevokedCertificateEntries) != 1 || pki.FormatSerial(crl.RevokedCertificateEntries[0].SerialNumber) != "b2" {
		t.Errorf("CRL after migration: number %v, %d entries", crl.Number, len(crl.RevokedCertificateEntries))
	}
	if res, err := p.Revoke("", "carol", "", 0); err != nil || len(res) != 1 || res[0].Record.Serial != "c3" {
		t.Errorf("revoke migrated device: %+v %v", res, err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "alice", Key: KeyEd25519}); err == nil {
		t.Error("issued a second valid certificate for a migrated device")
	}
}

func TestMigrateRefusesBrokenLegacyIndex(t *testing.T) {
	p := newTestPKI(t)
	data := writeLegacy(t, p, &Index{Version: 1, Certs: []Record{{Serial: "a1", Kind: KindDevice, Name: "alice"}}})
	torn := data[:len(data)/2]
	if err := os.WriteFile(p.Path(legacyIndex), torn, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.List(); err == nil || !strings.Contains(err.Error(), "index.json") {
		t.Errorf("list with a torn index.json: %v", err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "bob", Key: KeyEd25519}); err == nil {
		t.Error("issued into a PKI whose index.json does not parse")
	}
	if b, _ := os.ReadFile(p.Path(legacyIndex)); string(b) != string(torn) {
		t.Error("broken index.json was changed")
	}
	if _, err := os.Stat(p.Path(indexDB)); !os.IsNotExist(err) {
		t.Errorf("index.db made from a broken index.json: %v", err)
	}
}

// TestIndexTornCommit tears the newest commit of index.db the way a crash
// in the middle of writing its meta page would (bad checksum): the index
// opens at the commit before, with every earlier record.
func TestIndexTornCommit(t *testing.T) {
	p := newTestPKI(t)
	var serials []string
	for i := range 5 {
		is, err := p.IssueDevice(IssueOptions{Name: fmt.Sprintf("d%d", i), Key: KeyEd25519})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, is.Record.Serial)
	}
	f, err := os.OpenFile(p.Path(indexDB), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Meta pages 0 and 1 (one page each at the start of the file): page
	// header 16 bytes, then magic, version, page size, flags (4 each), root
	// bucket (16), freelist (8), pgid (8), txid (8) at 64, checksum at 72.
	pageSize := int64(os.Getpagesize())
	var txid [2]uint64
	for i := range int64(2) {
		var b [8]byte
		if _, err := f.ReadAt(b[:], i*pageSize+64); err != nil {
			t.Fatal(err)
		}
		txid[i] = binary.LittleEndian.Uint64(b[:])
	}
	newest := int64(0)
	if txid[1] > txid[0] {
		newest = 1
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad}, newest*pageSize+72); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := serialsOf(t, p)
	if len(got) != 1+len(serials)-1 || !slices.Equal(got[1:], serials[:len(serials)-1]) {
		t.Fatalf("after a torn last commit: %v, want the intermediate and %v", got, serials[:len(serials)-1])
	}
	// The next issue writes over the torn page and everything is consistent.
	if _, err := p.IssueDevice(IssueOptions{Name: "after", Key: KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	if got := serialsOf(t, p); len(got) != 1+len(serials) {
		t.Errorf("after the next issue: %d records", len(got))
	}
	checkIndex(t, p)
}

func checkIndex(t *testing.T, p *PKI) {
	t.Helper()
	st, err := openStore(p.Dir, false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("index.db check: %v", err)
	}
}

const crashHelperEnv = "SALLYPORT_CA_CRASH_DIR"

// TestCrashHelper is the child of TestIssueKilled: it issues devices into
// the PKI named by the environment and prints each serial once recorded.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashHelperEnv)
	if dir == "" {
		return // not run as the helper
	}
	p := New(dir)
	for i := range 5000 {
		is, err := p.IssueDevice(IssueOptions{Name: fmt.Sprintf("k%05d", i), Key: KeyEd25519})
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Println(is.Record.Serial)
	}
}

// TestIssueKilled kills an issuing process (SIGKILL, no cleanup) while it
// issues, and checks that every certificate it reported is in the index and
// the index is consistent.
func TestIssueKilled(t *testing.T) {
	p := newTestPKI(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+p.Dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reported []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(reported) < 40 {
		line := sc.Text()
		if strings.HasPrefix(line, "error:") {
			t.Fatal(line)
		}
		reported = append(reported, line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if len(reported) < 40 {
		t.Fatalf("helper reported only %d serials", len(reported))
	}
	got := serialsOf(t, p)
	for _, s := range reported {
		if !slices.Contains(got, s) {
			t.Errorf("serial %s reported issued but not in the index after the kill", s)
		}
	}
	checkIndex(t, p)
	if _, err := p.IssueDevice(IssueOptions{Name: "after-kill", Key: KeyEd25519}); err != nil {
		t.Errorf("issue after the kill: %v", err)
	}
}

// TestConcurrentIssuers runs issuers in parallel, each with its own PKI
// value (its own lock file descriptor, as separate processes would have).
func TestConcurrentIssuers(t *testing.T) {
	p := newTestPKI(t)
	const workers, each = 4, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*each+workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := New(p.Dir).IssueDevice(IssueOptions{Name: fmt.Sprintf("w%d-%d", w, i), Key: KeyEd25519}); err != nil {
					errs <- err
				}
			}
		})
	}
	// All workers also race for one name: exactly one may win.
	won := make(chan string, workers)
	for range workers {
		wg.Go(func() {
			if is, err := New(p.Dir).IssueDevice(IssueOptions{Name: "contested", Key: KeyEd25519}); err == nil {
				won <- is.Record.Serial
			} else if !strings.Contains(err.Error(), "already has a valid certificate") {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	close(won)
	for err := range errs {
		t.Error(err)
	}
	if n := len(won); n != 1 {
		t.Errorf("%d issuers got a certificate for the same device", n)
	}
	got := serialsOf(t, p)
	if len(got) != 1+workers*each+1 {
		t.Errorf("%d records, want %d", len(got), 1+workers*each+1)
	}
	seen := map[string]bool{}
	for _, s := range got {
		if seen[s] {
			t.Errorf("serial %s twice", s)
		}
		seen[s] = true
	}
	checkIndex(t, p)
}

func TestIssueDevices(t *testing.T) {
	p := newTestPKI(t)
	var opts []IssueOptions
	for i := range 20 {
		opts = append(opts, IssueOptions{Name: fmt.Sprintf("bulk-%02d", i), Key: KeyEd25519, Groups: []string{"load"}})
	}
	out, err := p.IssueDevices(opts)
	if err != nil || len(out) != 20 {
		t.Fatalf("IssueDevices: %d, %v", len(out), err)
	}
	for i, is := range out {
		if is.Record.Name != opts[i].Name || is.KeyPath == "" {
			t.Errorf("issued %d: %+v", i, is.Record)
		}
	}
	if got := serialsOf(t, p); len(got) != 21 {
		t.Errorf("%d records", len(got))
	}
	// A duplicate stops the batch; what came before it stays issued.
	out, err = p.IssueDevices([]IssueOptions{{Name: "new-1", Key: KeyEd25519}, {Name: "bulk-03", Key: KeyEd25519}, {Name: "new-2", Key: KeyEd25519}})
	if err == nil || len(out) != 1 {
		t.Errorf("batch with a duplicate: %d issued, %v", len(out), err)
	}
	if _, err := p.IssueDevices([]IssueOptions{{Name: "ok"}, {Name: "../bad"}}); err == nil {
		t.Error("batch with a bad name accepted")
	}
}
