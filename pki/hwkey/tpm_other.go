//go:build !linux

package hwkey

import (
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

func openTPM(path string) (transport.TPMCloser, error) {
	return nil, fmt.Errorf("TPM %s: TPM keys are supported on Linux only", path)
}
