package hwkey

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki"
)

// PKCS11URI is a parsed RFC 7512 pkcs11: URI naming a device key.
//
//	pkcs11:token=alice;object=sallyport?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so&pin-source=file:/etc/sallyport/alice.pin
//
// Path attributes select the token (token, serial, slot-id; manufacturer
// and model narrow it) and the key (object, id); the query names the
// module (module-path) and where the PIN is read from (pin-source: a file,
// file:/path, or credential:NAME for a systemd credential). A PIN in the
// URI itself (pin-value) is refused: URIs end up in configs, shell
// histories and process lists.
type PKCS11URI struct {
	Token        string // CKA token label
	Serial       string // token serial number
	Manufacturer string
	Model        string
	SlotID       *uint  // slot-id
	Object       string // key label (CKA_LABEL)
	ID           []byte // key id (CKA_ID)
	Type         string // "private" (or empty)
	ModulePath   string // the PKCS#11 library (.so)
	PINSource    string // where the PIN is read from; "" for a token without login

	raw string
}

// String returns the URI as it was given.
func (u *PKCS11URI) String() string { return u.raw }

// ParsePKCS11URI parses and checks an RFC 7512 URI for a device key.
func ParsePKCS11URI(s string) (*PKCS11URI, error) {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return nil, fmt.Errorf("PKCS#11 key %q: not a pkcs11: URI", s)
	}
	u := &PKCS11URI{raw: s}
	path, query, _ := strings.Cut(rest, "?")
	bad := func(format string, args ...any) error {
		return fmt.Errorf("PKCS#11 URI %q: %s", s, fmt.Sprintf(format, args...))
	}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok || k == "" {
				return nil, bad("path attribute %q is not NAME=VALUE", attr)
			}
			if seen[k] {
				return nil, bad("attribute %q given twice", k)
			}
			seen[k] = true
			val, err := url.PathUnescape(v)
			if err != nil {
				return nil, bad("attribute %s: %v", k, err)
			}
			switch k {
			case "token":
				u.Token = val
			case "serial":
				u.Serial = val
			case "manufacturer":
				u.Manufacturer = val
			case "model":
				u.Model = val
			case "slot-id":
				n, err := strconv.ParseUint(val, 10, 32)
				if err != nil {
					return nil, bad("slot-id %q is not a number", val)
				}
				id := uint(n)
				u.SlotID = &id
			case "object":
				u.Object = val
			case "id":
				u.ID = []byte(val)
			case "type":
				if val != "private" && val != "public" && val != "cert" {
					return nil, bad("type %q: want private", val)
				}
				u.Type = val
			case "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
				// Accepted and ignored: the module is named by module-path.
			default:
				if !strings.HasPrefix(k, "x-") {
					return nil, bad("unknown attribute %q", k)
				}
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok || k == "" {
				return nil, bad("query attribute %q is not NAME=VALUE", attr)
			}
			if seen["?"+k] {
				return nil, bad("attribute %q given twice", k)
			}
			seen["?"+k] = true
			val, err := url.PathUnescape(v)
			if err != nil {
				return nil, bad("attribute %s: %v", k, err)
			}
			switch k {
			case "module-path":
				u.ModulePath = val
			case "pin-source":
				u.PINSource = val
			case "pin-value":
				return nil, bad("a PIN in the URI (pin-value) is refused: put it in a file only this device's admin can read and name it with pin-source=file:/path")
			case "module-name":
				return nil, bad("module-name is not supported: give the library's full path with module-path=")
			default:
				if !strings.HasPrefix(k, "x-") {
					return nil, bad("unknown query attribute %q", k)
				}
			}
		}
	}
	switch {
	case u.ModulePath == "":
		return nil, bad("module-path is required (the PKCS#11 library, e.g. module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)")
	case !filepath.IsAbs(u.ModulePath):
		return nil, bad("module-path %q must be an absolute path", u.ModulePath)
	case filepath.Clean(u.ModulePath) != u.ModulePath:
		return nil, bad("module-path %q: give the library's path without . or .. parts or doubled slashes (%s)", u.ModulePath, filepath.Clean(u.ModulePath))
	case u.Token == "" && u.Serial == "" && u.SlotID == nil:
		return nil, bad("name the token: token=LABEL, serial= or slot-id=")
	case u.Object == "" && len(u.ID) == 0:
		return nil, bad("name the key: object=LABEL or id=")
	case u.Type != "" && u.Type != "private":
		return nil, bad("type=%s: a device key URI names the private key (type=private)", u.Type)
	}
	return u, nil
}

// Describe names the token and key in words, for status and errors.
func (u *PKCS11URI) Describe() string {
	tok := u.DescribeToken()
	if u.Object != "" {
		return fmt.Sprintf("%s, object %q", tok, u.Object)
	}
	return fmt.Sprintf("%s, id %x", tok, u.ID)
}

// DescribeToken names the token in words.
func (u *PKCS11URI) DescribeToken() string {
	switch {
	case u.Token != "":
		return fmt.Sprintf("token %q", u.Token)
	case u.Serial != "":
		return fmt.Sprintf("token with serial %q", u.Serial)
	case u.SlotID != nil:
		return fmt.Sprintf("token in slot %d", *u.SlotID)
	}
	return "token"
}

// maxPIN bounds a PIN file (PINs are short; this is a file, not a PIN).
const maxPIN = 4096

// ReadPIN reads the PIN the pin-source names: "file:/path" or "/path" (a
// file only its owner may read, like a key), or "credential:NAME" (the
// systemd credential NAME, from LoadCredential= or SetCredentialEncrypted=
// in the unit). A trailing newline is dropped. "" means no PIN.
func ReadPIN(source string) (string, error) {
	if source == "" {
		return "", nil
	}
	var path string
	switch {
	case strings.HasPrefix(source, "credential:"):
		name := strings.TrimPrefix(source, "credential:")
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("pin-source %s: no systemd credentials here ($CREDENTIALS_DIRECTORY unset; add LoadCredential=%s:/path to the unit)", source, name)
		}
		if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
			return "", fmt.Errorf("pin-source %s: not a credential name", source)
		}
		path = filepath.Join(dir, name)
	case strings.HasPrefix(source, "file:"):
		// file:/path, file:///path or file://localhost/path (RFC 8089);
		// file://host/path names another machine, file:path is relative:
		// neither is what a laptop's admin means.
		path = strings.TrimPrefix(source, "file:")
		if rest, ok := strings.CutPrefix(path, "//"); ok {
			host, p, _ := strings.Cut(rest, "/")
			if host != "" && host != "localhost" {
				return "", fmt.Errorf("pin-source %q names host %q; want file:/path", source, host)
			}
			path = "/" + p
		}
		if !strings.HasPrefix(path, "/") {
			return "", fmt.Errorf("pin-source %q is a relative path; want file:/path", source)
		}
	case strings.HasPrefix(source, "/"):
		path = source
	default:
		return "", fmt.Errorf("pin-source %q: want file:/path, /path or credential:NAME", source)
	}
	if err := pki.CheckKeyPerm(path); err != nil {
		return "", fmt.Errorf("PIN file: %w", err)
	}
	data, err := userfile.Read(path, maxPIN)
	if err != nil {
		return "", fmt.Errorf("PIN file %s: %w", path, err)
	}
	pin := strings.TrimRight(string(data), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("PIN file %s is empty", path)
	}
	if strings.ContainsAny(pin, "\r\n") {
		return "", fmt.Errorf("PIN file %s holds more than one line", path)
	}
	return pin, nil
}
