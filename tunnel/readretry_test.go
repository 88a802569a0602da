package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
)

func TestReadRetry(t *testing.T) {
	r := ReadRetry{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tests := []struct {
		err      error
		stopping bool
		again    bool
	}{
		{errors.New("too many segments"), false, true},
		{fmt.Errorf("read sp0: %w", os.ErrClosed), false, false},
		{io.EOF, false, false},
		{errors.New("transient"), true, false},
	}
	for _, tt := range tests {
		if got := r.Failed(tt.err, tt.stopping); got != tt.again {
			t.Errorf("Failed(%v, stopping=%v) = %v, want %v", tt.err, tt.stopping, got, tt.again)
		}
	}
	if r.failures != 1 {
		t.Fatalf("failures = %d, want 1", r.failures)
	}
	r.OK()
	if r.failures != 0 {
		t.Fatal("OK did not reset")
	}
}
