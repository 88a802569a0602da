package cli

import (
	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/server"
)

// ConfigFile is one of sallyport's config files, for the tool that writes
// their man pages (scripts/gendoc): the struct it loads into and its
// loader. Here because only this package may import both server and client.
type ConfigFile struct {
	Struct any                     // the config struct, by value
	Load   func(path string) error // loads and validates a file
}

// ConfigFiles are the gateway's and the laptop's config files, by the name
// of their annotated example in configs/.
func ConfigFiles() map[string]ConfigFile {
	return map[string]ConfigFile{
		"server.toml": {server.Config{}, func(p string) error { _, err := server.LoadConfig(p); return err }},
		"client.toml": {client.Config{}, func(p string) error { _, err := client.LoadConfig(p); return err }},
	}
}
