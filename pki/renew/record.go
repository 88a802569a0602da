package renew

// The issuance record: one JSON line per certificate the gateway renewed,
// appended to a file in its state directory (renewal.record). The admin's
// `sallyport pki list --renewed FILE` reads it to show what each device
// holds now. The file is compacted (the newest line of each device kept)
// when it has grown to twice its size after the last compaction plus
// compactSlack, so it stays around the size of one line per device.

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// Record is one renewal the gateway made.
type Record struct {
	Device        string    `json:"device"`
	User          string    `json:"user,omitempty"`
	Groups        []string  `json:"groups,omitempty"`
	Serial        string    `json:"serial"`   // the new certificate
	Previous      string    `json:"previous"` // the certificate it replaced
	Lineage       string    `json:"lineage"`  // the enrollment serial
	LineageIssuer string    `json:"lineage_issuer"`
	Issuer        string    `json:"issuer"` // the online issuer that signed it
	Fingerprint   string    `json:"fingerprint"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	IssuedAt      time.Time `json:"issued_at"`
}

// RecordOf describes the renewal of prev into cert at now.
func RecordOf(cert, prev *x509.Certificate, now time.Time) Record {
	id := pki.IdentityOf(cert)
	return Record{
		Device: id.Device, User: id.User, Groups: id.Groups, Serial: id.Serial, Previous: pki.FormatSerial(prev.SerialNumber),
		Lineage: id.Lineage, LineageIssuer: id.LineageIssuer, Issuer: id.Issuer, Fingerprint: id.Fingerprint,
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), IssuedAt: now.UTC(),
	}
}

// key identifies a device across its renewals.
func (r Record) key() string { return r.LineageIssuer + "\x00" + r.Lineage }

// Limits of the record file.
const (
	maxLine      = 16 << 10 // one record; longer lines are skipped as corrupt
	compactSlack = 1 << 20
	syncEvery    = time.Second // appends are fsynced at most this often
)

// Journal appends records to the record file. Safe for concurrent use.
type Journal struct {
	mu        sync.Mutex
	path      string
	f         *os.File
	size      int64
	compacted int64 // size after the last compaction
	lastSync  time.Time
	dirty     bool
}

// OpenJournal opens (creating it, mode 0640) the record file at path,
// compacting it first when it has grown.
func OpenJournal(path string) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("renewal record: %w", err)
	}
	j := &Journal{path: path}
	if fi, err := os.Stat(path); err == nil && fi.Size() > compactSlack {
		if err := j.compactLocked(); err != nil {
			return nil, err
		}
	}
	if err := j.openLocked(); err != nil {
		return nil, err
	}
	j.compacted = j.size
	return j, nil
}

func (j *Journal) openLocked() error {
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("renewal record: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("renewal record: %w", err)
	}
	j.f, j.size = f, fi.Size()
	return nil
}

// Append writes one record (one line, one write). The file is fsynced at
// most once a second (and on Close): a crash may lose the last second of
// records, never a certificate, and never leaves a torn line that readers
// do not skip.
func (j *Journal) Append(r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("renewal record: closed")
	}
	n, err := j.f.Write(line)
	j.size += int64(n)
	if err != nil {
		return fmt.Errorf("renewal record %s: %w", j.path, err)
	}
	j.dirty = true
	if now := time.Now(); now.Sub(j.lastSync) >= syncEvery {
		j.lastSync, j.dirty = now, false
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("renewal record %s: sync: %w", j.path, err)
		}
	}
	if j.size > 2*j.compacted+compactSlack {
		j.f.Close()
		j.f = nil
		cerr := j.compactLocked()
		if err := j.openLocked(); err != nil {
			return err
		}
		j.compacted = j.size
		if cerr != nil {
			return cerr
		}
	}
	return nil
}

// Close syncs and closes the file. Closing twice is fine.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	return err
}

// compactLocked rewrites the file with the newest record of each device,
// through a temporary file renamed over it.
func (j *Journal) compactLocked() error {
	latest, order, err := readLatest(j.path)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, k := range order {
		line, err := json.Marshal(latest[k])
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	tmp, err := os.CreateTemp(filepath.Dir(j.path), "."+filepath.Base(j.path)+".*")
	if err != nil {
		return fmt.Errorf("renewal record: compact: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(buf.Bytes())
	if err == nil {
		err = tmp.Chmod(0o640)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), j.path)
	}
	if err != nil {
		return fmt.Errorf("renewal record: compact: %w", err)
	}
	return nil
}

// readLatest returns the newest record of each device in the file, and the
// devices in the order of their newest record.
func readLatest(path string) (map[string]Record, []string, error) {
	latest := map[string]Record{}
	err := ReadRecords(path, func(r Record) error {
		latest[r.key()] = r
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return nil, nil, err
	}
	// Devices in the order of their newest record's issue time.
	all := make([]Record, 0, len(latest))
	for _, r := range latest {
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b Record) int {
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
	order := make([]string, len(all))
	for i, r := range all {
		order[i] = r.key()
	}
	return latest, order, nil
}

// ReadRecords calls fn for each record of the file at path, in file order.
// Lines that do not decode (a torn last line after a crash, a line longer
// than a record can be) are skipped.
func ReadRecords(path string, fn func(Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("renewal record: %w", err)
	}
	defer f.Close()
	return readRecords(f, fn)
}

func readRecords(r io.Reader, fn func(Record) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			var rec Record
			if json.Unmarshal(line, &rec) == nil && rec.Serial != "" && rec.Lineage != "" {
				if ferr := fn(rec); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("renewal record: %w", err)
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// maxLine is consumed and returned empty.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	long := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !long {
			line = append(line, chunk...)
			if len(line) > maxLine+1 {
				long, line = true, nil
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimRight(line, "\r\n"), err
	}
}

// Latest reads the record file at path and returns the newest record of
// each device, oldest first.
func Latest(path string) ([]Record, error) {
	latest, order, err := readLatest(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("renewal record: %w", err)
	}
	out := make([]Record, 0, len(order))
	for _, k := range order {
		out = append(out, latest[k])
	}
	return out, nil
}
