// Command pkg builds sallyport's .deb and .rpm from a tree staged by
// `make install DESTDIR=... PREFIX=/usr` (see `make deb`, `make rpm`).
//
// It uses nfpm as a library instead of dpkg-deb/rpmbuild so both formats
// come from one description on any build machine, and it lives in its own
// Go module so nfpm's dependencies never reach the sallyport binary's
// go.mod.
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)

func main() {
	stage := flag.String("stage", "", "tree staged by make install DESTDIR=... PREFIX=/usr")
	scripts := flag.String("scripts", "scripts", "directory with postinstall.sh, preremove.sh, postremove.sh")
	format := flag.String("format", "deb", "deb or rpm")
	version := flag.String("version", "0.0.0", "package version")
	out := flag.String("out", ".", "output directory")
	flag.Parse()
	path, err := build(*stage, *scripts, *format, *version, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkg:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// build packages every file under stage at the same path, the directories
// the package owns, and the maintainer scripts.
func build(stage, scripts, format, version, out string) (string, error) {
	if stage == "" {
		return "", fmt.Errorf("-stage is required")
	}
	var contents files.Contents
	err := filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		dst := "/" + filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			// Only the directories that are ours; the rest belong to the
			// distribution.
			if dst == "/etc/sallyport" || strings.HasPrefix(dst, "/usr/share/doc/sallyport") {
				contents = append(contents, &files.Content{Destination: dst, Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: fi.Mode().Perm(), Owner: "root", Group: "root"}})
			}
		case fi.Mode().IsRegular():
			contents = append(contents, &files.Content{Source: p, Destination: dst,
				FileInfo: &files.ContentFileInfo{Mode: fi.Mode().Perm(), Owner: "root", Group: "root"}})
		default:
			return fmt.Errorf("%s: unexpected file type %v", p, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	info := &nfpm.Info{
		Name:          "sallyport",
		Arch:          runtime.GOARCH,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "sallyport maintainers <sallyport@localhost>",
		Description:   "remote-access VPN over mutual TLS\nThe gateway, the laptop client and the device PKI in one binary, with\nsystemd units for an unprivileged gateway and per-profile clients.",
		Homepage:      "https://github.com/sallyport/sallyport",
		License:       "proprietary",
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scripts, "postinstall.sh"),
				PreRemove:   filepath.Join(scripts, "preremove.sh"),
				PostRemove:  filepath.Join(scripts, "postremove.sh"),
			},
		},
	}
	switch format {
	case "deb":
		info.Depends = []string{"passwd"}
	case "rpm":
		info.Depends = []string{"shadow-utils"}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", err
	}
	pkger, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info.Target = filepath.Join(out, pkger.ConventionalFileName(info))
	f, err := os.Create(info.Target)
	if err != nil {
		return "", err
	}
	if err := pkger.Package(info, f); err != nil {
		f.Close()
		os.Remove(info.Target)
		return "", fmt.Errorf("%s: %w", format, err)
	}
	return info.Target, f.Close()
}
