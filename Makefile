# Shoal — build, test and demo. Every target does its own set-up: Go modules
# come through the module proxy, and the ONNX Runtime shared library is
# fetched once from the onnxruntime-node npm package into a cache dir
# (unless ONNXRUNTIME_LIB already names a library).

GO        ?= go
ORT_VERSION := 1.24.1
UNAME_M   := $(shell uname -m)
ORT_ARCH  := $(if $(filter aarch64 arm64,$(UNAME_M)),arm64,x64)
ORT_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/shoal/onnxruntime/$(ORT_VERSION)/linux-$(ORT_ARCH)
ORT_LIB   := $(ORT_CACHE)/libonnxruntime.so.1

ifeq ($(origin ONNXRUNTIME_LIB),environment)
ORT_DEP :=
else
ORT_DEP := $(ORT_LIB)
export ONNXRUNTIME_LIB := $(ORT_LIB)
endif

PROTOC_GEN_GO_VERSION := v1.36.12
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/shoalfleet/shoal/internal/buildinfo.Version=$(VERSION)
TEST_TIMEOUT ?= 12m
FUZZTIME ?= 60s

.PHONY: all build ort demo test test-short vet fmt-check proto clean cross-arm64

all: build

build: $(ORT_DEP) ## bin/shoal and bin/shoal-agent (and the ONNX Runtime library, once)
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/shoal ./controlplane/cmd/shoal
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/shoal-agent ./agent/cmd/shoal-agent

ort: $(ORT_DEP) ## fetch the ONNX Runtime library into the cache
	@echo "ONNX Runtime: $(ONNXRUNTIME_LIB)"

$(ORT_LIB):
	@echo "fetching ONNX Runtime $(ORT_VERSION) (linux-$(ORT_ARCH)) from npm onnxruntime-node@$(ORT_VERSION)..."
	@command -v npm >/dev/null || { echo "npm is needed to fetch ONNX Runtime; install Node.js/npm or set ONNXRUNTIME_LIB to a libonnxruntime.so $(ORT_VERSION)"; exit 1; }
	@rm -rf $(ORT_CACHE)/.fetch && mkdir -p $(ORT_CACHE)/.fetch
	@cd $(ORT_CACHE)/.fetch && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null && \
		tar xzf onnxruntime-node-$(ORT_VERSION).tgz package/bin/napi-v6/linux/$(ORT_ARCH)/libonnxruntime.so.1 && \
		mv package/bin/napi-v6/linux/$(ORT_ARCH)/libonnxruntime.so.1 ../libonnxruntime.so.1.part && \
		mv ../libonnxruntime.so.1.part ../libonnxruntime.so.1
	@rm -rf $(ORT_CACHE)/.fetch
	@echo "ONNX Runtime $(ORT_VERSION) cached at $(ORT_LIB)"

demo: build ort ## the main job: control plane + 5 agents; train, staged rollout, drift, retrain, canary
	./bin/shoal demo $(DEMO_ARGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: ort fmt-check vet build ## everything CI runs
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	GO=$(GO) scripts/fuzz.sh 3

# make test as a new user gets it: a fresh clone, empty caches, LANG=C.UTF-8
# with only the C locales, and no optional system package on PATH
# (scripts/test-fresh.sh). .ci/run runs it after make test.
.PHONY: test-fresh
test-fresh: ## make test on a fresh clone with empty caches and no optional packages
	scripts/test-fresh.sh

.PHONY: fuzz
fuzz: ort ## every fuzz target for FUZZTIME each (scripts/fuzz.sh)
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

test-short: ort
	$(GO) test -short -count=1 ./...

# The fault-injection suite in full (docs/RELIABILITY.md): the failpoint
# build's own tests, then e2e/faults with minutes-long outages and many
# random kills. `make test` runs e2e/faults in its short mode.
.PHONY: test-faults
test-faults: ort ## fault injection, full mode (docs/RELIABILITY.md)
	$(GO) test -race -count=1 -tags failpoints ./agent/internal/failpoint
	$(GO) test -race -count=1 -timeout 45m -v ./e2e/faults -faults.full

bench: ort build
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

proto: ## regenerate proto/ Go code (Debian protobuf-compiler + pinned protoc-gen-go)
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	protoc --plugin=protoc-gen-go=$(CURDIR)/bin/protoc-gen-go --go_out=. --go_opt=paths=source_relative proto/shoal/v1/*.proto

cross-arm64: ## the agent for linux/arm64 (needs an aarch64 C cross compiler for cgo)
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$${CC_ARM64:-aarch64-linux-gnu-gcc} $(GO) build -o bin/linux-arm64/shoal-agent ./agent/cmd/shoal-agent

clean:
	rm -rf bin
