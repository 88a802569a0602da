package hwkey

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// openTPM opens the TPM at path: a character device (/dev/tpmrm0) or the
// unix socket of a software TPM (swtpm socket --server type=unixio), one
// nobody but root (or this user) could have put there (checkTPMPath).
func openTPM(path string) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (is the TPM enabled in the firmware setup? ls /sys/class/tpm shows what the kernel found)", ErrNoTPM, path)
	}
	if err != nil {
		return nil, fmt.Errorf("TPM %s: %w", path, err)
	}
	if err := checkTPMPath(path); err != nil {
		return nil, err
	}
	var t transport.TPMCloser
	if fi.Mode()&fs.ModeSocket != 0 {
		t, err = linuxudstpm.Open(path)
	} else {
		t, err = linuxtpm.Open(path)
	}
	switch {
	case errors.Is(err, syscall.EBUSY):
		return nil, fmt.Errorf("TPM %s is busy: another program holds it open (use /dev/tpmrm0, the resource manager, which many programs can share)", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("TPM %s: permission denied (run as root, or as a member of the tss group)", path)
	case err != nil:
		return nil, fmt.Errorf("TPM %s: %w", path, err)
	}
	return t, nil
}
