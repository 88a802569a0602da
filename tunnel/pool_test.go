package tunnel

import (
	"io"
	"testing"
)

// TestReaderHoldsBufferOnlyWhileBuffered: an idle Reader waits in a small
// read of its own; it takes a stream buffer when bytes arrive and gives it
// back once everything buffered has been decoded.
func TestReaderHoldsBufferOnlyWhileBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	r := NewReader(pr, 0)
	in := NewBatch(4, Headroom+2000)
	if r.holding() {
		t.Fatal("new Reader holds a buffer")
	}
	frames := mustFrame(t, nil, FrameData, pkt(1500, 1))
	frames = mustFrame(t, frames, FrameKeepalive, nil)
	frames = mustFrame(t, frames, FrameData, pkt(700, 2))
	go func() {
		// In pieces, so the Reader sees a frame cut across reads.
		for len(frames) > 0 {
			k := min(len(frames), 333)
			_, _ = pw.Write(frames[:k])
			frames = frames[k:]
		}
	}()
	got := 0
	for got < 2 {
		r.Wait()
		n, err := r.ReadBatch(in.Bufs, in.Sizes, Headroom, nil)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if got != 2 || in.Sizes[got-1] != 700 {
		t.Fatalf("got %d packets, last %d bytes", got, in.Sizes[got-1])
	}
	if r.holding() || r.Buffered() != 0 {
		t.Fatalf("Reader holds its buffer (%v, %d bytes buffered) after decoding everything", r.holding(), r.Buffered())
	}

	// Next's payload stays valid until the next call, so the buffer is
	// held until then.
	go func() { _, _ = pw.Write(mustFrame(t, nil, FrameHello, []byte(`{"version":1}`))) }()
	if typ, p, err := r.Next(); err != nil || typ != FrameHello || string(p) != `{"version":1}` {
		t.Fatalf("Next: %#x %q %v", typ, p, err)
	}
	if !r.holding() {
		t.Fatal("Reader gave its buffer back while the payload Next returned is live")
	}
	pw.Close()
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("at end of stream: %v, want io.EOF", err)
	}
	if r.holding() {
		t.Fatal("Reader holds its buffer after the stream ended")
	}
}

// TestWriterHoldsNoBuffer: the Writer's encode buffer is taken for one
// call only.
func TestWriterHoldsNoBuffer(t *testing.T) {
	w := NewWriter(io.Discard, 0)
	b := NewBatch(3, Headroom+20000)
	b.Sizes[0], b.Sizes[1], b.Sizes[2] = 100, 20000, 1400
	if err := w.WriteBatch(b.Bufs, b.Sizes, 3, Headroom); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteControl(FrameConfig, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteControl(FrameKeepalive, nil); err != nil {
		t.Fatal(err)
	}
	if w.bw != nil {
		t.Fatal("Writer keeps an encode buffer between calls")
	}
}

// TestBatchPool: a batch comes back empty and whole.
func TestBatchPool(t *testing.T) {
	p := &BatchPool{Count: 4, Size: 100}
	b := p.Get()
	if b.N != 0 || len(b.Bufs) != 4 || len(b.Bufs[0]) != 100 {
		t.Fatalf("new batch N=%d bufs %d x %d", b.N, len(b.Bufs), len(b.Bufs[0]))
	}
	b.N = 3
	p.Put(b)
	p.Put(nil)
	if b2 := p.Get(); b2.N != 0 {
		t.Fatalf("reused batch N=%d", b2.N)
	}
}
