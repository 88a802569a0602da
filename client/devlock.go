package client

// One device, one tunnel per laptop. Two clients with one bundle (two
// profiles made from the same file, or an old copy beside a renewed one)
// would each connect as the same device, and the gateway would keep
// replacing one session with the other until it refuses the device as
// duplicate-device. So before anything else, Run takes a lock named after
// the device as the gateway knows it (pki.Identity: the enrollment issuer
// and the device name, which a renewal keeps) in the runtime directory
// (RuntimeDirectory=, /run/sallyport). The lock is an flock on that file:
// the kernel drops it when its process ends, however it ends, so a crashed
// client never blocks the next `up`. Whoever holds it writes who it is into
// the file, and a second client is told in plain words.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// lockOwner is what the holder of a device lock writes into it.
type lockOwner struct {
	PID     int       `json:"pid"`
	Profile string    `json:"profile"`
	Config  string    `json:"config,omitempty"`
	Device  string    `json:"device"` // the certificate's device name
	Since   time.Time `json:"since"`
}

// deviceLockFile is the lock of the device id in dir.
func deviceLockFile(dir string, id pki.Identity) string {
	issuer := id.LineageIssuer
	if issuer == "" {
		issuer = id.Issuer
	}
	sum := sha256.Sum256([]byte(issuer + "\x00" + id.Device))
	return filepath.Join(dir, "device-"+hex.EncodeToString(sum[:16])+".lock")
}

// InUseError says that another client on this laptop holds the device.
type InUseError struct {
	Device string
	Owner  lockOwner // zero when the holder could not be read
	Lock   string
}

func (e *InUseError) Error() string {
	o := e.Owner
	if o.PID == 0 {
		return fmt.Sprintf("device %s is already up on this laptop (another sallyport holds %s): two tunnels with one device "+
			"certificate would keep replacing each other at the gateway; stop the other first", e.Device, e.Lock)
	}
	stop := "sudo sallyport down"
	switch {
	case o.Profile != "" && o.Config == filepath.Join(ConfigDir(), o.Profile+".toml"):
		stop += " " + o.Profile // a profile by name, as it was brought up
	case o.Config != "":
		stop += " -c " + o.Config
	}
	return fmt.Sprintf("device %s is already up on this laptop: profile %s (pid %d, since %s) uses the same device certificate, "+
		"and two tunnels with one certificate would keep replacing each other at the gateway; stop it first (%s)",
		e.Device, o.Profile, o.PID, o.Since.Local().Format("2006-01-02 15:04:05"), stop)
}

// readOwner reads the holder's note from the lock file at path.
func readOwner(path string) lockOwner {
	var o lockOwner
	if b, err := os.ReadFile(path); err == nil && len(b) < 4096 {
		_ = json.Unmarshal(b, &o)
	}
	return o
}
