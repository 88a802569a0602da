package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer is a log sink that the goroutines of the code under test write
// and the test reads at the same time (a bytes.Buffer is not safe for
// that).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
