// Package logfmt builds the daemons' slog loggers: one line per event,
// key=value text or JSON, and no timestamp of their own when stderr is the
// systemd journal (JOURNAL_STREAM names it), which stamps every line.
package logfmt

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// Formats the loggers write.
const (
	Text = "text"
	JSON = "json"
)

// Check reports whether format is one New accepts ("" means text).
func Check(format string) error {
	switch format {
	case "", Text, JSON:
		return nil
	}
	return fmt.Errorf("log format %q: use text or json", format)
}

// New returns a logger writing format to w at level. When w is os.Stderr
// and stderr is connected to the journal, the time is left out.
func New(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	if err := Check(format); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok && toJournal(f, os.Getenv("JOURNAL_STREAM")) {
		opts.ReplaceAttr = dropTime
	}
	if format == JSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// dropTime removes the record's time.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
