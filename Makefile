# overlay-agent: build, test and demo entry points. Every target installs what it needs, so a
# fresh Debian 12 machine (as root) needs nothing but this checkout and a Rust toolchain.
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := openvswitch-switch etcd-server etcd-client iproute2 iperf3 ethtool \
                protobuf-compiler iputils-ping procps

.PHONY: all deps build test fmt-check clippy unit demo demo-down clean

all: build

# Debian packages the build (protoc for etcd-client) and the tests (OVS, etcd, netns tools) need.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

build: deps
	$(CARGO) build --workspace --all-targets

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: unit tests, real ovsdb-server/ovs-vswitchd/etcd integration tests, multi-host
# tests in network namespaces. Needs root (namespaces, veths); fails loudly without it.
test: deps fmt-check clippy
	@[ "$$(id -u)" = 0 ] || { echo "error: make test needs root (network namespaces, OVS)" >&2; exit 1; }
	# The multi-host tests run the overlay-agent binary itself: build it first.
	$(CARGO) build --workspace --bins
	mkdir -p target; set -o pipefail; { $(CARGO) test --workspace --all-targets && $(CARGO) test --workspace --doc; } 2>&1 | tee target/test.log
	@# The demo is part of the test: it must come up, pass its own live check, and go away.
	bash scripts/demo.sh up > target/demo.log 2>&1 || { bash scripts/demo.sh down; cat target/demo.log; exit 1; }
	bash scripts/demo.sh down
	@grep -E "passed, [0-9]+ failed" target/demo.log | sed 's/^ */demo: /'
	@# One closing line for the whole run (cargo prints one per test binary).
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "total: %d passed, %d failed\n", p, f }' target/test.log

unit:
	$(CARGO) test --workspace --lib

# Three hosts as network namespaces with their own OVS and agent, two tenants, containers,
# and a live connectivity/isolation check. Needs root. `make demo-down` removes it all.
demo: deps
	$(CARGO) build -p overlay-agent
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

clean:
	$(CARGO) clean
