# sallyport build, test, demo and benchmark entry points.
# `make test` is what CI runs (.ci/run); `make demo`, `make bench` and `make scale` need root.

GO        ?= go
BIN       := bin/sallyport
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Install layout: `make install PREFIX=/usr DESTDIR=/tmp/stage` stages a
# package tree. Units go to the vendor unit directory under PREFIX (systemd
# reads /usr/local/lib/systemd/system too), never to the admin's /etc.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSCTLDIR ?= $(PREFIX)/lib/sysctl.d
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR    ?= $(PREFIX)/share/doc/sallyport
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# PKCS#11 tokens need cgo (miekg/pkcs11 loads the token's library with
# dlopen), so they sit behind the pkcs11 build tag. make builds, vets and
# tests with it: the binary, the .deb and CI have PKCS#11. A plain
# `go build ./cmd/sallyport` (or `make build PKCS11=0`) leaves it out and
# says so when a config names a pkcs11: key; TPM keys are pure Go and in
# every build. -trimpath is fine with cgo.
PKCS11    ?= 1
GOTAGS    := $(if $(filter 1,$(PKCS11)),pkcs11)
# Built the way distributions build theirs (lintian's hardening checks): a
# position-independent executable (ASLR for the whole binary), relocations
# read-only and bound at start (RELRO, BIND_NOW), the cgo part with
# _FORTIFY_SOURCE and the stack protector; stripped, with no build paths,
# and without the C compiler's .comment section.
GOFLAGS_BUILD := -trimpath -buildmode=pie -tags '$(GOTAGS)' -ldflags "-s -w -X main.version=$(VERSION) -extldflags '-Wl,-z,relro,-z,now'"
CGO_CPPFLAGS ?= -D_FORTIFY_SOURCE=2
CGO_CFLAGS ?= -O2 -g -fstack-protector-strong
export CGO_CPPFLAGS CGO_CFLAGS

.PHONY: all build test test-short vet fmt-check fuzz mutate demo bench scale attack install uninstall units man deb rpm clean FORCE

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/sallyport
	objcopy --remove-section=.comment $(BIN)

# Static checks, unit tests with the race detector, and the end-to-end tests
# (network namespaces; need root and iproute2, skipped otherwise, failed under CI=true).
# Every e2e gateway runs with only the capabilities its unit grants.
# The hardware key tests need swtpm and softhsm2 (.ci/run installs them);
# the second run checks what a binary without the pkcs11 tag says.
test: build fmt-check vet
	SALLYPORT_BIN=$(CURDIR)/$(BIN) SALLYPORT_E2E_CAPS_ONLY=1 $(GO) test -race -count=1 -timeout 20m -tags '$(GOTAGS)' ./...
	cd scripts/pkg && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(GO) test -count=1 -run PKCS11 ./pki/hwkey/

test-short: fmt-check vet
	$(GO) test -race -short -count=1 -tags '$(GOTAGS)' ./...

vet:
	$(GO) vet ./...
	$(GO) vet -tags pkcs11 ./...

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi

# Run each fuzz target briefly (FUZZTIME=30s make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# A gateway, a laptop and a LAN host in network namespaces, end to end.
demo: build
	$(GO) build -o bin/demohelper ./scripts/demohelper
	SALLYPORT_DEMOHELPER=$(CURDIR)/bin/demohelper bash scripts/demo.sh $(CURDIR)/$(BIN)

# Mutation testing of the packet and trust rules (gremlins, pinned in the
# script; docs/testing.md). Slow, not part of `make test`.
mutate:
	bash scripts/mutate.sh

# Throughput and latency: direct path, raw TLS, sallyport with each driver.
bench: build
	bash scripts/bench.sh $(CURDIR)/$(BIN)

# One gateway holding a fleet: memory per session, churn against bare TLS,
# reconnect storm (bench/scale; sizes from SCALE_* in scripts/scale.sh).
scale: build
	bash scripts/scale.sh $(CURDIR)/$(BIN)

# Strangers without a certificate (silent and dripping connections, from
# one address and from 16) against tls.max_handshakes = 8, while a valid
# laptop connects: its time to connect (scripts/attack.sh; before/after
# with ATTACK_BEFORE_REF=<git ref>). Run under flock /work/.bench.lock.
attack: build
	bash scripts/attack.sh $(CURDIR)/$(BIN)

# Man pages (section 1: one per command, from the command tree; section 5:
# the two config files, from the annotated configs/*.toml) and shell
# completions (scripts/gendoc), so they never drift from the flags and keys.
man:
	$(GO) run ./scripts/gendoc -man bin/man -completions bin/completions -version $(VERSION)

# The units are templates: ExecStart and Documentation follow BINDIR/DOCDIR.
UNITS := sallyport-server.service sallyport-client@.service
UNITBUILD ?= bin/units
units: $(addprefix $(UNITBUILD)/,$(UNITS))
$(UNITBUILD)/%: systemd/%.in FORCE
	@mkdir -p $(@D)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' $< > $@

# The user documentation README.md links to, installed beside it so the
# links work in DOCDIR too.
DOCS := $(sort $(wildcard docs/*.md))

# Everything install puts down, as DEST:SOURCE:MODE; uninstall removes
# exactly these (and the directories only we own, when empty).
INSTALL_FILES := \
	$(BINDIR)/sallyport:$(BIN):0755 \
	$(UNITDIR)/sallyport-server.service:$(UNITBUILD)/sallyport-server.service:0644 \
	$(UNITDIR)/sallyport-client@.service:$(UNITBUILD)/sallyport-client@.service:0644 \
	$(SYSCTLDIR)/60-sallyport.conf:systemd/60-sallyport.conf:0644 \
	$(SYSUSERSDIR)/sallyport.conf:systemd/sallyport.sysusers:0644 \
	$(DOCDIR)/README.md:README.md:0644 \
	$(DOCDIR)/ARCHITECTURE.md:ARCHITECTURE.md:0644 \
	$(foreach f,$(DOCS),$(DOCDIR)/$(f):$(f):0644) \
	$(DOCDIR)/examples/server.toml:configs/server.toml:0644 \
	$(DOCDIR)/examples/client.toml:configs/client.toml:0644 \
	$(BASHCOMPDIR)/sallyport:bin/completions/sallyport.bash:0644 \
	$(ZSHCOMPDIR)/_sallyport:bin/completions/_sallyport:0644 \
	$(FISHCOMPDIR)/sallyport.fish:bin/completions/sallyport.fish:0644

install: build units man
	@set -e; for f in $(INSTALL_FILES); do \
	  dst=$${f%%:*}; rest=$${f#*:}; src=$${rest%%:*}; mode=$${rest##*:}; \
	  echo "install $$src $(DESTDIR)$$dst"; install -D -m $$mode $$src $(DESTDIR)$$dst; \
	done
	@set -e; for f in bin/man/sallyport*.1 bin/man/sallyport*.5; do \
	  dst=$(DESTDIR)$(MANDIR)/man$${f##*.}/$${f##*/}.gz; \
	  echo "gzip -9n $$f > $$dst"; install -d -m 0755 $${dst%/*}; \
	  gzip -9nc $$f > $$dst; chmod 0644 $$dst; \
	done
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/sallyport

# Removes what install put down; /etc/sallyport only if empty (it holds the
# admin's configs and keys). With DESTDIR set, empty parents are removed too
# so a staged tree round-trips to nothing.
uninstall:
	@set -e; for f in $(INSTALL_FILES); do \
	  dst=$(DESTDIR)$${f%%:*}; echo "rm -f $$dst"; rm -f $$dst; \
	done
	rm -f $(DESTDIR)$(MANDIR)/man1/sallyport.1.gz $(DESTDIR)$(MANDIR)/man1/sallyport-*.1.gz $(DESTDIR)$(MANDIR)/man5/sallyport-*.5.gz
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/sallyport 2>/dev/null
	@if [ -n "$(DESTDIR)" ]; then for f in $(INSTALL_FILES) $(SYSCONFDIR)/sallyport/x $(MANDIR)/man1/x $(MANDIR)/man5/x; do \
	  d=$$(dirname $(DESTDIR)$${f%%:*}); \
	  while [ "$$d" != "$(DESTDIR)" ] && [ "$${d#$(DESTDIR)/}" != "$$d" ]; do \
	    { rmdir "$$d" 2>/dev/null || [ ! -e "$$d" ]; } || break; d=$$(dirname "$$d"); \
	  done; \
	done; fi

# Debian and RPM packages (nfpm as a library; see scripts/pkg): the tree
# `make install PREFIX=/usr` stages, with units in /lib/systemd/system.
PKGVERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//;s/-/+/g' || true)
PKGVERSION := $(if $(PKGVERSION),$(PKGVERSION),0.0.0+git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0))
STAGE := bin/stage
deb rpm:
	rm -rf $(STAGE)
	$(MAKE) install DESTDIR=$(CURDIR)/$(STAGE) PREFIX=/usr UNITDIR=/lib/systemd/system SYSCTLDIR=/usr/lib/sysctl.d SYSUSERSDIR=/usr/lib/sysusers.d
	cd scripts/pkg && $(GO) run . -stage $(CURDIR)/$(STAGE) -scripts $(CURDIR)/scripts/pkg/scripts -format $@ -version $(PKGVERSION) -out $(CURDIR)/bin -repo $(CURDIR)

FORCE:

clean:
	rm -rf bin
