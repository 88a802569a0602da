# sallyport build, test, demo and benchmark entry points.
# `make test` is what CI runs (.ci/run); `make demo` and `make bench` need root.

GO        ?= go
BIN       := bin/sallyport
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX    ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR   ?= /etc/systemd/system
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: all build test test-short vet fmt-check fuzz demo bench install clean

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/sallyport

# Static checks, unit tests with the race detector, and the end-to-end tests
# (network namespaces; need root and iproute2, skipped otherwise, failed under CI=true).
test: build fmt-check vet
	SALLYPORT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m ./...

test-short: fmt-check vet
	$(GO) test -race -short -count=1 ./...

vet:
	$(GO) vet ./...

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
	bash scripts/demo.sh $(CURDIR)/$(BIN)

# Throughput and latency: direct path, raw TLS, sallyport with each driver.
bench: build
	bash scripts/bench.sh $(CURDIR)/$(BIN)

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/sallyport
	install -D -m 0644 systemd/sallyport-server.service $(DESTDIR)$(UNITDIR)/sallyport-server.service
	install -D -m 0644 systemd/sallyport-client@.service $(DESTDIR)$(UNITDIR)/sallyport-client@.service
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/sallyport
	install -D -m 0644 configs/server.toml $(DESTDIR)$(PREFIX)/share/doc/sallyport/examples/server.toml
	install -D -m 0644 configs/client.toml $(DESTDIR)$(PREFIX)/share/doc/sallyport/examples/client.toml
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/sallyport/README.md

clean:
	rm -rf bin
