package renew

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func rec(device string, n int, at time.Time) Record {
	return Record{Device: device, Serial: fmt.Sprintf("%s-%d", device, n), Previous: fmt.Sprintf("%s-%d", device, n-1),
		Lineage: "l-" + device, LineageIssuer: "CN=Acme Root", Issuer: "CN=Acme Online Issuer", IssuedAt: at,
		NotAfter: at.Add(time.Hour)}
}

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "renewals.jsonl")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 50 {
				if err := j.Append(rec(fmt.Sprintf("dev%d", i), n, t0.Add(time.Duration(n)*time.Minute))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("record file mode %v, want 0640", fi.Mode().Perm())
	}
	n := 0
	if err := ReadRecords(path, func(Record) error { n++; return nil }); err != nil || n != 400 {
		t.Fatalf("read %d records: %v", n, err)
	}

	// A torn last line (crash mid-write) and a line longer than any
	// record are skipped; the rest reads.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"device":"x","serial":"` + strings.Repeat("a", 20<<10) + `","lineage":"y"}` + "\n")
	f.WriteString(`{"device":"dev0","serial":"torn`)
	f.Close()
	latest, err := Latest(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(latest) != 8 {
		t.Fatalf("%d devices, want 8", len(latest))
	}
	for _, r := range latest {
		if !strings.HasSuffix(r.Serial, "-49") {
			t.Errorf("device %s: latest %s, want its 50th", r.Device, r.Serial)
		}
	}
	if _, err := Latest(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("Latest of a missing file")
	}
}

// TestJournalCompacts: the file does not grow without bound; compaction
// keeps exactly the newest record of each device.
func TestJournalCompacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "renewals.jsonl")
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// 100 devices renewed 200 times each: about 5 MB of lines.
	for n := range 200 {
		for d := range 100 {
			if err := j.Append(rec(fmt.Sprintf("dev%03d", d), n, t0.Add(time.Duration(n)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
	}
	j.Close()
	fi, _ := os.Stat(path)
	if fi.Size() > 2*compactSlack+100*400 {
		t.Fatalf("record file is %d bytes after 20,000 renewals of 100 devices: not compacted", fi.Size())
	}
	latest, err := Latest(path)
	if err != nil || len(latest) != 100 {
		t.Fatalf("%d devices after compaction: %v", len(latest), err)
	}
	for _, r := range latest {
		if !strings.HasSuffix(r.Serial, "-199") {
			t.Fatalf("device %s: newest %s after compaction", r.Device, r.Serial)
		}
	}
	// Reopening a large file compacts it at once.
	j, err = OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
}
