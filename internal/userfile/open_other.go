//go:build !unix

package userfile

import "os"

// openFlags: systems without FIFOs in the file system open plainly.
const openFlags = 0

func clearNonblock(*os.File) error { return nil }
