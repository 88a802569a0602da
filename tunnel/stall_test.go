package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriterStalled: with SetTimeout, a write to a peer that does not read
// fails with ErrStalled instead of blocking forever; while it is blocked,
// Busy reports it, TryWriteControl gives up at once, and Finish still
// returns (cutting the blocked write short) and closes the Writer.
func TestWriterStalled(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer) error
	}{
		{"data", func(w *Writer) error {
			b := NewBatch(1, Headroom+1400)
			b.Sizes[0] = 1400
			return w.WriteBatch(b.Bufs, b.Sizes, 1, Headroom)
		}},
		{"direct", func(w *Writer) error {
			b := NewBatch(1, Headroom+60000)
			b.Sizes[0] = 60000
			return w.WriteBatch(b.Bufs, b.Sizes, 1, Headroom)
		}},
		{"keepalive", func(w *Writer) error { return w.WriteControl(FrameKeepalive, nil) }},
		{"large control", func(w *Writer) error { return w.WriteControl(FrameConfig, make([]byte, 1000)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe() // synchronous: nobody reads b, so every write blocks
			defer a.Close()
			defer b.Close()
			w := NewWriter(a, 0)
			w.SetTimeout(a, 50*time.Millisecond)
			if err := tt.write(w); !errors.Is(err, ErrStalled) {
				t.Fatalf("write to a peer that does not read: %v, want ErrStalled", err)
			}
		})
	}

	t.Run("watchdog", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		w := NewWriter(a, 0)
		w.SetTimeout(a, time.Hour) // only Finish may end the blocked write
		errc := make(chan error, 1)
		go func() { errc <- w.WriteControl(FrameKeepalive, nil) }()
		for w.Busy(time.Now()) == 0 {
			time.Sleep(time.Millisecond)
		}
		if sent, err := w.TryWriteControl(FrameKeepalive, nil); sent || err != nil {
			t.Fatalf("TryWriteControl behind a blocked write: sent %v, %v", sent, err)
		}
		if err := w.Finish(FrameClose, []byte(`{"reason":"stalled"}`), 20*time.Millisecond); err == nil {
			t.Fatal("Finish to a peer that does not read succeeded")
		}
		if err := <-errc; !errors.Is(err, ErrStalled) {
			t.Fatalf("blocked write after Finish: %v, want ErrStalled", err)
		}
		if err := w.WriteControl(FrameKeepalive, nil); !errors.Is(err, ErrWriterClosed) {
			t.Fatalf("write after Finish: %v, want ErrWriterClosed", err)
		}
		if w.Busy(time.Now()) != 0 {
			t.Fatal("Busy after every call returned")
		}
	})

	t.Run("reader keeps up", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		w := NewWriter(a, 0)
		w.SetTimeout(a, time.Minute)
		for range 100 {
			if err := w.WriteControl(FrameKeepalive, nil); err != nil {
				t.Fatal(err)
			}
		}
		if sent, err := w.TryWriteControl(FrameKeepalive, nil); !sent || err != nil {
			t.Fatalf("TryWriteControl on an idle Writer: sent %v, %v", sent, err)
		}
		if err := w.Finish(FrameClose, []byte(`{"reason":"kicked"}`), time.Minute); err != nil {
			t.Fatalf("Finish: %v", err)
		}
	})
}

// TestFinishWithoutTimeout: without deadlines Finish is a plain last write.
func TestFinishWithoutTimeout(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	if err := w.Finish(FrameClose, []byte(`{"reason":"x"}`), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(FrameClose, nil, time.Second); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("second Finish: %v", err)
	}
	r := NewReader(&buf, 0)
	if typ, p, err := r.Next(); err != nil || typ != FrameClose || string(p) != `{"reason":"x"}` {
		t.Fatalf("got %#x %q %v", typ, p, err)
	}
}
