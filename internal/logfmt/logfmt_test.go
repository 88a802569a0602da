package logfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFormats(t *testing.T) {
	var b bytes.Buffer
	l, err := New(&b, JSON, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("session up", "device", "alice", "groups", []string{"eng"})
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "session up" || m["device"] != "alice" || m["time"] == nil {
		t.Fatalf("json line %q: %v", b.String(), err)
	}
	b.Reset()
	l, _ = New(&b, "", slog.LevelInfo)
	l.Info("x", "k", "v")
	if !strings.HasPrefix(b.String(), "time=") || !strings.Contains(b.String(), "k=v") {
		t.Fatalf("text line %q", b.String())
	}
	if _, err := New(&b, "xml", slog.LevelInfo); err == nil {
		t.Fatal("xml accepted")
	}
}

// TestJournal: the time is dropped only when JOURNAL_STREAM names the very
// file the logger writes to.
func TestJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	st := fi.Sys().(*syscall.Stat_t)
	if !toJournal(f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)) {
		t.Fatal("the journal stream not recognised")
	}
	if toJournal(f, fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)) || toJournal(f, "") {
		t.Fatal("another stream taken for the journal")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	l, _ := New(f, Text, slog.LevelInfo)
	l.Info("x")
	b, _ := os.ReadFile(f.Name())
	if strings.Contains(string(b), "time=") {
		t.Fatalf("time kept: %q", b)
	}
}
