# The few entry points of the project. `make test` and `make demo` work on a fresh
# Debian 12 machine: they install what is missing first.
CARGO ?= cargo
BENCH ?=
KEEP ?=
BENCHES := kvstore allocator datapath apiserver e2e hubble ui k8s kvstoremesh policy dns scale

.PHONY: all deps kube-server build test lint demo bench clean

all: build

deps:
	@scripts/install-deps.sh

# A real kube-apiserver for the Kubernetes tests, built once from Debian's
# source package into ~/.cache/clustermesh/kube (about 4-9 minutes the first time).
kube-server: deps
	@scripts/kube-test-server.sh >/dev/null

build: deps
	$(CARGO) build --workspace --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint kube-server
	$(CARGO) nextest run --workspace --profile ci --no-tests=warn

# `make demo KEEP=1` keeps the mesh and its Hubble UI up at the end.
demo: deps
	@KEEP=$(KEEP) scripts/demo.sh

# `make bench` runs every benchmark, `make bench BENCH=kvstore` one of them.
# Each prints one JSON object per line on stdout; progress goes to stderr.
bench: deps
	@$(CARGO) build --release --workspace --bins >&2
	@set -e; for b in $(if $(BENCH),$(BENCH),$(BENCHES)); do \
	  $(CARGO) bench -q --bench $$b || { echo "bench $$b failed" >&2; exit 1; }; \
	done

clean:
	$(CARGO) clean
