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
# The services make build and the Dockerfile build, with the same flags
# (tools/devstack/internal/deploycheck checks that they match).
SERVICES := ingest blobwriter refwriter
GO_BUILD_FLAGS := -trimpath -ldflags='-s -w'
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
test-tools: ## Build what the tests run besides Go and Postgres (MinIO, NATS CLI, nats-server) into ~/.cache/blobref
	@echo "==> test tools (MinIO, the NATS CLI, nats-server): built once, then cached"
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
lint: ## gofmt (must list nothing) and go vet in every module
	@$(modules); \
	unformatted=$$(gofmt -l $$mods); \
	if [ -n "$$unformatted" ]; then echo "gofmt -w these files:" >&2; echo "$$unformatted" >&2; exit 1; fi; \
	for dir in $$mods; do echo "==> vet $$dir"; (cd "$$dir" && $(GO) vet ./... && $(GO) vet $(TEST_TAGS) ./...); done

.PHONY: tidy
tidy: ## go mod tidy in every module (GOWORK=off: siblings come through replace directives)
	@$(modules); \
	for dir in $$mods; do echo "==> $$dir"; (cd "$$dir" && GOWORK=off $(GO) mod tidy); done

.PHONY: fuzz
fuzz: ## Fuzz the event decoder for FUZZTIME (default 30s)
	cd pkg/events && $(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) .

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
bench-ingest: ## Benchmark the HTTP path (issue 10): uploads/s, p50/p99, CPU per upload at 1-256 clients against the bulk path, accept only, peak RSS (BENCH_FLAGS)
	$(GO) run ./bench/cmd/pipelinebench $(BENCH_FLAGS)

.PHONY: bench
bench: ## Benchmark the bulk pipeline (issue 6): uploads/s, latency, CPU and RSS for file:// and mem://, floors held against their stages, ceiling (BENCH_FLAGS)
	$(GO) run ./bench/cmd/throughput $(BENCH_FLAGS)

.PHONY: bench-backlog
bench-backlog: ## The services' RSS with 1,000,000 request events pending (long; BENCH_FLAGS)
	$(GO) run ./bench/cmd/throughput -configs= -floors=false -backlog 1000000 $(BENCH_FLAGS)
