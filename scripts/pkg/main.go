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
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

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
	repo := flag.String("repo", ".", "the source tree (its git history makes the changelog)")
	flag.Parse()
	path, err := build(*stage, *scripts, *format, *version, *out, *repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkg:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// maintainer is the package's Maintainer field and the changelog's and
// copyright file's contact.
const maintainer = "sallyport maintainers <maintainers@sallyport.dev>"

// docDir is where the package's documentation goes.
const docDir = "/usr/share/doc/sallyport"

// build packages every file under stage at the same path, the directories
// the package owns, the generated copyright file and changelog, the
// lintian overrides (deb), and the maintainer scripts.
func build(stage, scripts, format, version, out, repo string) (string, error) {
	if stage == "" {
		return "", fmt.Errorf("-stage is required")
	}
	gen, err := os.MkdirTemp(out, ".pkg-gen-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(gen)
	var contents files.Contents
	err = filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
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
			// distribution. /etc/sallyport is made by the postinst
			// (root:sallyport 0750 needs the group, which the postinst
			// creates first).
			if strings.HasPrefix(dst, docDir) {
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
	generated, err := generate(gen, stage, format, version, repo, filepath.Dir(scripts))
	if err != nil {
		return "", err
	}
	contents = append(contents, generated...)
	depends, err := binaryDepends(filepath.Join(stage, "usr/bin/sallyport"), format)
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
		Maintainer:    maintainer,
		Description:   "remote-access VPN over mutual TLS\nThe gateway, the laptop client and the device PKI in one binary, with\nsystemd units for an unprivileged gateway and per-profile clients.",
		Homepage:      "https://github.com/sallyport/sallyport",
		License:       "proprietary",
		Overridables: nfpm.Overridables{
			Contents:   contents,
			Depends:    depends,
			Recommends: []string{"bash-completion"},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scripts, "postinstall.sh"),
				PreRemove:   filepath.Join(scripts, "preremove.sh"),
				PostRemove:  filepath.Join(scripts, "postremove.sh"),
			},
		},
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

// generate writes the copyright file, the changelog and (deb) the lintian
// overrides into dir and returns them as package contents.
func generate(dir, stage, format, version, repo, pkgDir string) (files.Contents, error) {
	goroot, modcache, err := goEnv()
	if err != nil {
		return nil, err
	}
	comps, err := components(filepath.Join(stage, "usr/bin/sallyport"), goroot, modcache)
	if err != nil {
		return nil, fmt.Errorf("copyright: %w", err)
	}
	h, err := gitHistory(repo)
	if err != nil {
		h = history{date: time.Now().UTC()}
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			var sec int64
			if _, err := fmt.Sscan(s, &sec); err == nil {
				h.date = time.Unix(sec, 0).UTC()
			}
		}
	}
	changelog, err := gzipped([]byte(changelogFile(version, maintainer, h)))
	if err != nil {
		return nil, err
	}
	type gen struct {
		name, dst string
		data      []byte
	}
	all := []gen{
		{"copyright", docDir + "/copyright", []byte(copyrightFile(maintainer, comps))},
		{"changelog.gz", docDir + "/changelog.gz", changelog},
	}
	if format == "deb" {
		ov, err := os.ReadFile(filepath.Join(pkgDir, "lintian-overrides"))
		if err != nil {
			return nil, err
		}
		all = append(all, gen{"lintian-overrides", "/usr/share/lintian/overrides/sallyport", ov})
	}
	var out files.Contents
	for _, g := range all {
		p := filepath.Join(dir, g.name)
		if err := os.WriteFile(p, g.data, 0o644); err != nil {
			return nil, err
		}
		out = append(out, &files.Content{Source: p, Destination: g.dst,
			FileInfo: &files.ContentFileInfo{Mode: 0o644, Owner: "root", Group: "root"}})
	}
	return out, nil
}

func goEnv() (goroot, modcache string, err error) {
	out, err := exec.Command("go", "env", "GOROOT", "GOMODCACHE").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env: %w", err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(f) != 2 {
		return "", "", fmt.Errorf("go env: %q", out)
	}
	return f[0], f[1], nil
}
