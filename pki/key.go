package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ParseKey parses a PEM private key (PKCS#8, or PKCS#1/SEC1 from other tools).
func ParseKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key type %T cannot sign", k)
		}
		return s, nil
	}
}

// KeyGroup is the group the packaged gateway runs as: a gateway key may be
// shared with it (mode 0640, group sallyport) instead of being owner-only.
const KeyGroup = "sallyport"

// CheckKeyPerm accepts a private key file in exactly one of these forms and
// refuses any other with the command that fixes it:
//   - readable by its owner only (mode 0600 or 0400);
//   - readable by its owner and the group sallyport only (mode 0640 or 0440,
//     group sallyport), so the unprivileged gateway can read a root-owned key;
//   - a file in the service's systemd credentials directory
//     ($CREDENTIALS_DIRECTORY, from LoadCredential=), not readable by others.
func CheckKeyPerm(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err // the PathError names the file; callers say which key
	}
	return checkKeyMode(path, fi.Mode(), fileGroup(fi), os.Getenv("CREDENTIALS_DIRECTORY"))
}

// checkKeyMode is CheckKeyPerm's rule on a file's mode and group name.
func checkKeyMode(path string, mode os.FileMode, group, credDir string) error {
	if !mode.IsRegular() {
		return fmt.Errorf("key %s is not a regular file (%v)", path, mode.Type())
	}
	m := mode.Perm()
	if credDir != "" && m&0o007 == 0 && inDir(path, credDir) {
		return nil
	}
	switch {
	case m&0o077 == 0:
		return nil
	case m&0o077 == 0o040 && group == KeyGroup:
		return nil
	case m&0o007 == 0 && m&0o070 == 0o040:
		return fmt.Errorf("key %s is readable by group %q (mode %04o); only the group %s may share a key. Fix with: chgrp %s %s, or chmod 600 %s",
			path, group, m, KeyGroup, KeyGroup, path, path)
	}
	return fmt.Errorf("key %s is accessible by group or others (mode %04o); refusing to use it. Fix with: chmod 600 %s (or chgrp %s and chmod 640 for the gateway's key)",
		path, m, path, KeyGroup)
}

// CheckCAKeyPerm refuses a CA key that anyone but its owner may access (the
// gateway's group has no business reading the key that signs devices).
func CheckCAKeyPerm(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("CA key %s is accessible by group or others (mode %04o); refusing to sign with it. Fix with: chmod 600 %s", path, m, path)
	}
	return nil
}

// inDir reports whether path names a file directly or deeper inside dir.
func inDir(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && filepath.IsAbs(dir) && filepath.IsAbs(path)
}
