package hwkey

import (
	"fmt"
	"path/filepath"
)

// checkTPMPath refuses a TPM someone other than root (or this process's
// user) could stand in for. The client runs as root and trusts whatever
// answers at its tpm_device with the device key: a character device only
// the kernel makes, but a software TPM's unix socket is whatever process
// bound it. So the device or socket, as given and where its links lead,
// must belong to root or this user, and no directory above it may be
// writable by others (a sticky world-writable one, like /tmp, is fine:
// nobody can rename what root owns there). The device's own mode is not
// judged: /dev/tpmrm0 is group tss's to use, and whoever may connect to a
// socket can use the TPM, not pretend to be it.
func checkTPMPath(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("TPM %q: give a clean absolute path", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("TPM %s: %w", path, err)
	}
	return checkOwners("TPM "+path, path, real, false, "put a TPM of their own in place of the one this client", "run the software TPM as root, its socket in a directory only root may write")
}
