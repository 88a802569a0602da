//go:build !linux

package hwkey

import "errors"

// CheckModule refuses every PKCS#11 module: who may replace a library is
// checked only on Linux.
func CheckModule(path string) error {
	return errors.New("PKCS#11 modules are supported only on Linux")
}
