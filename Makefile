# blobref — `make help` lists the targets.
#
# Every target that works on modules loops over the workspace's modules,
# as `go list -m` reports them from go.work.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN := bin
# The services make build and the Dockerfile build, with the same flags,
# which are internal/release's, the benchmarks' (tools/devstack/internal/
# deploycheck checks that the three match). The one tag,
# disable_grpc_modules, leaves out cloud.google.com/go/storage's DirectPath
# gRPC dependencies (xDS, RLS), which gs:// over the JSON API never uses:
# 8 MiB of blobwriter's RSS at rest, 10-15 MiB of blobwriter's and
# refwriter's at full load (internal/blobdrivers).
SERVICES := ingest blobwriter refwriter notifier
GO_BUILD_FLAGS := -trimpath -tags disable_grpc_modules -ldflags='-s -w'
# Tests build with failpoints (package pkg/step/failpoint), which release
# builds leave out; vet sees the same files.
TEST_TAGS := -tags blobref_failpoints
TEST_FLAGS := -race -count=1 -timeout 20m $(TEST_TAGS)
FUZZTIME ?= 30s
DOCKERFILE_UTILS_VERSION := 0.16.3

# modules lists the workspace's module directories and fails when there are none.
define modules
mods=$$($(GO) list -m -f '{{.Dir}}'); [ -n "$$mods" ] || { echo "no modules in go.work" >&2; exit 1; }
endef

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-14s %s\n", $$1, $$2 }'

.PHONY: test
test: test-tools ## go vet and go test -race in every workspace module (the test command)
	@$(modules); failed=""; \
	for dir in $$mods; do \
		echo "==> $$dir"; \
		if ! (cd "$$dir" && $(GO) vet $(TEST_TAGS) ./... && $(GO) test $(TEST_FLAGS) ./...); then failed="$$failed $$dir"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed" >&2; exit 1; fi; \
	echo "all modules passed"

.PHONY: test-tools
test-tools: ## Install what the tests run besides Go and Postgres (MinIO, NATS CLI, nats-server, fake-gcs-server, Azurite) into ~/.cache/blobref; Chromium with apt-get when root
	@echo "==> test tools (MinIO, the NATS CLI, nats-server, fake-gcs-server, Azurite): installed once per version, then cached; Chromium: found, or apt-get installs it when root"
	@$(GO) run ./internal/cmd/testtools

.PHONY: build
build: ## Static binaries into ./bin: the services, devstack and blobrefctl
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -o $(BIN)/ $(addprefix ./services/,$(SERVICES)) ./tools/devstack
	CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -o $(BIN)/ ./tools/blobrefctl

.PHONY: run
run: build ## Run the whole pipeline locally (embedded NATS, local or its own Postgres, ./.data; docs/devstack.md)
	./$(BIN)/devstack

.PHONY: reset
reset: ## Clear the local pipeline's state: ./.data and devstack's database, together
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -o $(BIN)/ ./tools/devstack
	./$(BIN)/devstack reset

.PHONY: lint
lint: gosec vulncheck ## gofmt (must list nothing), go vet, gosec and govulncheck in every module
	@$(modules); \
	unformatted=$$(gofmt -l $$mods); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w these files:" >&2; echo "$$unformatted" >&2; exit 1; fi; \
	for dir in $$mods; do echo "==> vet $$dir"; (cd "$$dir" && $(GO) vet ./... && $(GO) vet $(TEST_TAGS) ./...); done

# gosec and govulncheck are pinned in internal/testtools and installed into
# ~/.cache/blobref the first time (go run ./internal/cmd/testtools -path).
TESTTOOL = $(GO) run ./internal/cmd/testtools -path

.PHONY: gosec
gosec: ## gosec over every module's code (tests aside; and again with the failpoint build tag where a module has such code): no finding, and every #nosec names its rules and says why (#nosec G204 -- why)
	@$(modules); \
	gosec=$$($(TESTTOOL) gosec); failed=""; \
	for dir in $$mods; do \
		echo "==> gosec $${dir#$$PWD/}"; \
		(cd "$$dir" && "$$gosec" -quiet -color=false -nosec-require-rules -nosec-require-justification ./...) || failed="$$failed $${dir#$$PWD/}"; \
		if grep -rlq --include='*.go' --exclude='*_test.go' '^//go:build.*blobref_failpoints' "$$dir"; then \
			echo "==> gosec $${dir#$$PWD/} $(TEST_TAGS) (the code only test builds have)"; \
			(cd "$$dir" && "$$gosec" -quiet -color=false $(TEST_TAGS) -nosec-require-rules -nosec-require-justification ./...) || failed="$$failed $${dir#$$PWD/}($(TEST_TAGS))"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "gosec: findings in:$$failed (fix them, or suppress one with // #nosec G… -- why)" >&2; exit 1; fi

# govulncheck's database: VULNDB=<url> names a mirror (https:// or file://).
# VULNCHECK_REQUIRED=1 (CI) makes an unreachable database fail instead of skip.
VULNDB ?= https://vuln.go.dev
VULNCHECK_REQUIRED ?=

.PHONY: vulncheck
vulncheck: ## govulncheck in every module where its database (VULNDB, default https://vuln.go.dev) is reachable, else SKIPPED (VULNCHECK_REQUIRED=1: fails); a known vulnerability fails
	@db='$(VULNDB)'; probe=""; \
	case "$$db" in \
		file://*) [ -f "$${db#file://}/index/db.json" ] || probe="no $${db#file://}/index/db.json" ;; \
		*) if command -v curl >/dev/null 2>&1; then probe=$$(curl -fsS -m 15 -o /dev/null "$$db/index/db.json" 2>&1) && probe=""; \
		   elif command -v wget >/dev/null 2>&1; then wget -q -T 15 -O /dev/null "$$db/index/db.json" || probe="wget: $$db/index/db.json not fetched"; \
		   else probe="neither curl nor wget is installed to probe it"; fi ;; \
	esac; \
	if [ -n "$$probe" ]; then \
		echo "==> govulncheck: SKIPPED, not run: its vulnerability database $$db is not reachable from here ($$probe)."; \
		echo "    Run make vulncheck where it is, or name a reachable mirror: make vulncheck VULNDB=<url>."; \
		[ -z '$(VULNCHECK_REQUIRED)' ] || { echo "govulncheck: VULNCHECK_REQUIRED is set: failing" >&2; exit 1; }; \
		exit 0; \
	fi; \
	$(modules); \
	govulncheck=$$($(TESTTOOL) govulncheck); failed=""; \
	for dir in $$mods; do \
		echo "==> govulncheck $${dir#$$PWD/} (database $$db)"; rc=0; \
		(cd "$$dir" && "$$govulncheck" -db "$$db" ./...) || rc=$$?; \
		case $$rc in \
			0) ;; \
			3) failed="$$failed $${dir#$$PWD/}" ;; \
			*) echo "govulncheck could not check $${dir#$$PWD/} (exit $$rc): see above" >&2; exit 1 ;; \
		esac; \
	done; \
	if [ -n "$$failed" ]; then echo "govulncheck: known vulnerabilities reach the code of:$$failed" >&2; exit 1; fi

.PHONY: tidy
tidy: ## go mod tidy in every module (GOWORK=off: siblings come through replace directives)
	@$(modules); \
	for dir in $$mods; do echo "==> $$dir"; (cd "$$dir" && GOWORK=off $(GO) mod tidy); done

.PHONY: fuzz
fuzz: ## Run every fuzz target (the event decoder, ingest's request parsing, ...) for FUZZTIME each (default 30s)
	@$(modules); \
	files=$$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' $$mods | sort); \
	[ -n "$$files" ] || { echo "no fuzz targets found" >&2; exit 1; }; \
	n=0; failed=""; \
	for file in $$files; do \
		dir=$$(dirname "$$file"); dir=$${dir#$$PWD/}; \
		for target in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$$file"); do \
			echo "==> $$dir $$target for $(FUZZTIME)"; n=$$((n + 1)); \
			if ! (cd "$$dir" && $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) .); then failed="$$failed $$dir:$$target"; fi; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed (the failing inputs are under testdata/fuzz/)" >&2; exit 1; fi; \
	echo "fuzzed $$n targets for $(FUZZTIME) each"

.PHONY: compose-check
compose-check: ## Validate docker-compose.yml, the Dockerfile and deploy/ with what runs here
	cd tools/devstack && $(GO) test -count=1 -v ./internal/deploycheck/
	@if docker compose version >/dev/null 2>&1; then \
		echo "==> docker compose config"; docker compose config --quiet; \
	else \
		echo "docker compose plugin not installed: skipped 'docker compose config' (compose-go checked the file above)"; \
	fi
	@if command -v npx >/dev/null 2>&1; then \
		echo "==> dockerfile-utils lint Dockerfile"; npx --yes dockerfile-utils@$(DOCKERFILE_UTILS_VERSION) lint Dockerfile; \
	else \
		echo "npx not installed: skipped the Dockerfile linter (dockerfile-utils)"; \
	fi

.PHONY: clean
clean: ## Remove ./bin (./.data, the local stack's state, stays: make reset clears it)
	rm -rf $(BIN)

.PHONY: torture
TORTURE_FLAGS ?= -long
torture: ## Crash-safety torture run: kills, NATS and Postgres restarts, then the invariants (TORTURE_FLAGS)
	$(GO) run ./tools/torture $(TORTURE_FLAGS)

.PHONY: bench-ingest
BENCH_FLAGS ?=
bench-ingest: ## Benchmark the HTTP path (issue 10): uploads/s, p50/p99, CPU per upload at 1-256 clients against the bulk path, accept only, the latency floor at 1 client, the accept floor and the ceilings it sets, peak RSS (BENCH_FLAGS)
	$(GO) run ./bench/cmd/pipelinebench $(BENCH_FLAGS)

.PHONY: bench
bench: ## Benchmark the bulk pipeline (issue 6): uploads/s, latency, CPU and RSS for file:// and mem://, floors held against their stages, ceiling (BENCH_FLAGS)
	$(GO) run ./bench/cmd/throughput $(BENCH_FLAGS)

.PHONY: bench-backlog
bench-backlog: ## The services' RSS with 1,000,000 request events pending (long; BENCH_FLAGS)
	$(GO) run ./bench/cmd/throughput -configs= -floors=false -backlog 1000000 $(BENCH_FLAGS)
