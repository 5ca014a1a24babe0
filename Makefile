# dialtone — `make run` starts it on its defaults, `make test` runs every test.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...
FUZZTIME ?= 30s

.PHONY: all build run test test-short lint vet fmt fmt-check depcheck cover bench bench-compare bench-cluster conformance fuzz soak cert clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/dialtone ./cmd/dialtone
	@if [ -d cmd/sipload ]; then $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/sipload ./cmd/sipload; fi

# Starts dialtone on its embedded defaults: bbolt in ./data, SIP on :5060
# (UDP+TCP), provisioning on :8080, admin API on 127.0.0.1:8081. The first
# start writes a provider admin token to ./data/admin-token.
run: build
	./bin/dialtone $(ARGS)

# Everything CI checks: formatting, vet, dependency direction, and every test
# (unit, end-to-end, fuzz seed corpora, interop) under the race detector.
test: fmt-check vet depcheck
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

lint: vet fmt-check depcheck
	@test -x "$$($(GO) env GOPATH)/bin/staticcheck" || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$$($(GO) env GOPATH)/bin/staticcheck $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | while read f; do [ -f "$$f" ] && echo "$$f"; done)); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# store is the domain: it must import no other package of ours.
depcheck:
	@bad=$$($(GO) list -deps ./store | grep '^github.com/dialtone-voip/dialtone/' | grep -v '^github.com/dialtone-voip/dialtone/store$$' || true); \
	if [ -n "$$bad" ]; then echo "store imports our packages: $$bad"; exit 1; fi
	@for p in sip provisioning admin; do \
	  bad=$$($(GO) list -deps ./$$p/... | grep '^github.com/dialtone-voip/dialtone/' | grep -v -e '/store' -e '/internal/' -e "/$$p" || true); \
	  if [ -n "$$bad" ]; then echo "$$p imports a sibling package: $$bad"; exit 1; fi; \
	done

cover:
	$(GO) test -count=1 -coverprofile=cover.out $(PKGS) && $(GO) tool cover -func=cover.out | tail -1

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m $(PKGS)
	@if [ -x scripts/bench-e2e.sh ]; then scripts/bench-e2e.sh; fi
	@if [ -x scripts/bench-provisioning.sh ]; then scripts/bench-provisioning.sh; fi
	DIALTONE_POWERUP_PHONES=2000 $(GO) test -count=1 -run '^TestPowerUp$$' -v ./cmd/dialtone
	@if command -v etcd >/dev/null; then scripts/bench-cluster.sh; else echo "bench-cluster skipped: it needs etcd (apt-get install etcd-server)"; fi

# Several nodes on one 3-member etcd cluster (scripts/bench-cluster.sh).
bench-cluster:
	scripts/bench-cluster.sh

bench-compare:
	@if [ -x scripts/bench-compare.sh ]; then scripts/bench-compare.sh; else echo "bench-compare: not built yet (issue 6)"; exit 1; fi

# The conformance message set (sip/testdata/conformance) against a running
# dialtone and Kamailio side by side: one table, the RFC decides.
conformance:
	scripts/conformance.sh

# Runs every fuzz target for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

soak:
	DIALTONE_SOAK=long $(GO) test -count=1 -timeout 60m -run 'TestCrashSafety|TestPowerLoss' -v ./cmd/dialtone

cert: build
	./bin/dialtone cert --out ./data

clean:
	rm -rf bin cover.out
