package pki

import (
	"errors"
	"testing"

	"github.com/sallyport/sallyport/internal/userfile"
)

// TestLoadersBounded: certificates, CRLs and key pairs are read through
// the bounded reader: /dev/zero is refused by name, not read forever.
func TestLoadersBounded(t *testing.T) {
	_, err1 := LoadCertificates("/dev/zero")
	_, err2 := LoadCRL("/dev/zero", nil)
	_, err3 := LoadKeyPair("/dev/zero", "/dev/zero")
	_, err4 := ReadPEMFile(t.TempDir())
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, userfile.ErrNotRegular) {
			t.Errorf("loader %d: %v, want %v", i+1, err, userfile.ErrNotRegular)
		}
	}
}
