# overlay-agent: build, test and demo entry points. Every target installs what it needs, so a
# fresh Debian 12 machine (as root) needs nothing but this checkout and a Rust toolchain.
SHELL := /bin/bash
CARGO ?= cargo
# Where cargo puts its output (CARGO_TARGET_DIR is honoured, as cargo does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
APT_PACKAGES := openvswitch-switch etcd-server etcd-client iproute2 iperf3 ethtool tcpdump iputils-arping \
                protobuf-compiler iputils-ping procps openssl
# The container runtimes the plugin tests run for real (Docker 20.10, podman 4.3 with CNI) and
# the static busybox their image is made of; installed without recommends (no apparmor, no
# default configuration beyond what the tests bring).
RUNTIME_PACKAGES := docker.io podman containernetworking-plugins busybox-static util-linux tar

.PHONY: all deps build test fmt-check clippy unit demo demo-down clean fuzz fuzz-smoke old-agent

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
	@missing=""; for p in $(RUNTIME_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
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

# The agent that upgrade tests start from: the last release of the port-per-peer design, built
# from this repository's history into its own target dir (its dependencies are not this tree's).
OLD_AGENT_COMMIT := bbfa8b3
OLD_AGENT_DIR := $(abspath $(TARGET_DIR))/old-agent
OLD_AGENT := $(OLD_AGENT_DIR)/overlay-agent

old-agent: deps
	@git -C . cat-file -e $(OLD_AGENT_COMMIT)^{commit} 2>/dev/null || { \
	  echo "error: commit $(OLD_AGENT_COMMIT) (the old agent for the upgrade tests) is not in this clone: run 'git fetch --unshallow'" >&2; exit 1; }
	@if [ "$$(cat $(OLD_AGENT_DIR)/commit 2>/dev/null)" != $(OLD_AGENT_COMMIT) ] || [ ! -x $(OLD_AGENT) ]; then \
	  echo "building the old agent ($(OLD_AGENT_COMMIT)) into $(OLD_AGENT_DIR)"; \
	  rm -rf $(OLD_AGENT_DIR)/src && mkdir -p $(OLD_AGENT_DIR)/src && \
	  git archive $(OLD_AGENT_COMMIT) | tar -x -C $(OLD_AGENT_DIR)/src && \
	  (cd $(OLD_AGENT_DIR)/src && CARGO_TARGET_DIR=$(OLD_AGENT_DIR)/target CARGO_INCREMENTAL=0 \
	    CARGO_PROFILE_DEV_DEBUG=0 $(CARGO) build --quiet -p overlay-agent --bin overlay-agent) && \
	  cp $(OLD_AGENT_DIR)/target/debug/overlay-agent $(OLD_AGENT) && echo $(OLD_AGENT_COMMIT) > $(OLD_AGENT_DIR)/commit && \
	  rm -rf $(OLD_AGENT_DIR)/target $(OLD_AGENT_DIR)/src; \
	fi

# Every test: unit tests, real ovsdb-server/ovs-vswitchd/etcd integration tests, multi-host
# tests in network namespaces. Needs root (namespaces, veths); fails loudly without it.
test: deps fmt-check clippy lint-scripts vagrant-validate packaging-check fuzz-smoke old-agent
	@[ "$$(id -u)" = 0 ] || { echo "error: make test needs root (network namespaces, OVS)" >&2; exit 1; }
	# The multi-host tests run the overlay-agent binary itself: build it first.
	$(CARGO) build --workspace --bins
	mkdir -p target; set -o pipefail; { OVERLAY_OLD_AGENT=$(OLD_AGENT) $(CARGO) test --workspace --all-targets && $(CARGO) test --workspace --doc; } 2>&1 | tee target/test.log
	@# The demo is part of the test: it must come up, pass its own live check, and go away.
	bash scripts/demo.sh up > target/demo.log 2>&1 || { bash scripts/demo.sh down; cat target/demo.log; exit 1; }
	bash scripts/demo.sh down
	@grep -E "passed, [0-9]+ failed" target/demo.log | sed 's/^ */demo: /'
	@# The Vagrant provisioning scripts, run for real on the netns demo hosts (docker stood in by
	@# network namespaces); after the demo, never alongside it: both use the demo's names.
	bash scripts/provision-check.sh > target/provision.log 2>&1 || { tail -50 target/provision.log; exit 1; }
	@grep -E "^provision-check: " target/provision.log | tail -1 || true
	@# One closing line for the whole run (cargo prints one per test binary).
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "total: %d passed, %d failed\n", p, f }' target/test.log

# libFuzzer targets (fuzz/): the OVSDB framer, OVSDB value/update/reply decoders, etcd value
# decoders, and the OpenFlow framer and decoder (what a switch sends). cargo-fuzz wants nightly
# flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_TARGETS := ovsdb_framer ovsdb_values etcd_values openflow_decoder
FUZZ_SECONDS ?= 15
fuzz-smoke:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 2>&1 \
	    | grep -E "^(Done|==[0-9]+== ERROR|SUMMARY)|panicked" ; \
	  [ $${PIPESTATUS[0]} = 0 ] || { echo "fuzz target $$t failed: see fuzz/artifacts/$$t" >&2; exit 1; }; \
	done

# Longer runs for hunting: make fuzz FUZZ_SECONDS=3600
fuzz: fuzz-smoke

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

# ---- Packaging, script lint and Vagrantfile checks -----------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=/tmp/root] [NOBUILD=1]   (NOBUILD: binary built already)
# make uninstall [PURGE=1]                                           (PURGE: also /etc/overlay-agent)
PREFIX ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
PKG_BIN := $(TARGET_DIR)/release/overlay-agent
PKG_CNI := $(TARGET_DIR)/release/overlay-cni
# Where CNI runtimes look for plugins (podman, containerd and CRI-O all search it).
CNI_BIN_DIR ?= /opt/cni/bin
PKG_DOCDIR := $(PREFIX)/share/doc/overlay-agent
PKG_CONFDIR := /etc/overlay-agent
PKG_STATEDIR := /var/lib/overlay-agent
OLD_STATE_DIR_LINE := state_dir = "/run/overlay-agent"
# Every *.sh under these directories (a missing directory is skipped).
LINT_SCRIPT_DIRS := vagrant packaging scripts vm

# $(call pkg-ensure,COMMAND,PACKAGE): installs PACKAGE with apt-get when COMMAND is missing.
define pkg-ensure
command -v $(1) >/dev/null 2>&1 || { \
  if [ "$$(id -u)" != 0 ]; then echo "error: $(1) not found: run as root or apt-get install $(2)" >&2; exit 1; fi; \
  echo "installing $(2) (for $(1))"; \
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
endef

.PHONY: install uninstall packaging-check lint-scripts vagrant-validate

install:
	@if [ -z "$(NOBUILD)" ]; then \
	  command -v $(CARGO) >/dev/null || { echo "error: $(CARGO) not found (under sudo?): run 'cargo build --release -p overlay-agent -p overlay-cni' as yourself, then 'sudo make install NOBUILD=1'" >&2; exit 1; }; \
	  $(call pkg-ensure,protoc,protobuf-compiler); \
	  echo "$(CARGO) build --release -p overlay-agent -p overlay-cni"; $(CARGO) build --release -p overlay-agent -p overlay-cni; \
	fi
	@[ -x $(PKG_BIN) ] || { echo "error: $(PKG_BIN) is missing: build it or drop NOBUILD" >&2; exit 1; }
	@[ -x $(PKG_CNI) ] || { echo "error: $(PKG_CNI) is missing: build it (cargo build --release -p overlay-cni) or drop NOBUILD" >&2; exit 1; }
	install -D -m 0755 $(PKG_BIN) $(DESTDIR)$(PREFIX)/bin/overlay-agent
	install -D -m 0755 $(PKG_CNI) $(DESTDIR)$(CNI_BIN_DIR)/overlay-cni
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PKG_DOCDIR)
	sed -e 's|/usr/local/bin/overlay-agent|$(PREFIX)/bin/overlay-agent|' \
	    -e 's|/usr/local/share/doc/overlay-agent|$(PKG_DOCDIR)|' \
	    packaging/overlay-agent.service > $(DESTDIR)$(UNITDIR)/overlay-agent.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/overlay-agent.service
	sed -e 's|/usr/local/bin/overlay-agent|$(PREFIX)/bin/overlay-agent|' \
	    -e 's|/usr/local/share/doc/overlay-agent|$(PKG_DOCDIR)|' \
	    packaging/overlay-docker-plugin.service > $(DESTDIR)$(UNITDIR)/overlay-docker-plugin.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/overlay-docker-plugin.service
	install -m 0644 README.md config/agent.example.toml packaging/cni/overlay-red.conflist $(DESTDIR)$(PKG_DOCDIR)/
	install -m 0644 packaging/agent.toml $(DESTDIR)$(PKG_DOCDIR)/agent.default.toml
	install -d -m 0755 $(DESTDIR)$(PKG_CONFDIR)
	@# Never overwrite an operator's config: the new default goes to the doc dir to compare with.
	@# One value is migrated: the state_dir default of earlier releases, which the unit's
	@# RuntimeDirectory empties at every stop (the agent refuses it); an identity already made
	@# there moves along.
	@if [ -e $(DESTDIR)$(PKG_CONFDIR)/agent.toml ]; then \
	  if grep -qx '$(OLD_STATE_DIR_LINE)' $(DESTDIR)$(PKG_CONFDIR)/agent.toml; then \
	    sed -i 's|^$(OLD_STATE_DIR_LINE)$$|state_dir = "$(PKG_STATEDIR)"|' $(DESTDIR)$(PKG_CONFDIR)/agent.toml; \
	    echo "$(DESTDIR)$(PKG_CONFDIR)/agent.toml: state_dir /run/overlay-agent (an earlier default, emptied by systemd at every stop) is now $(PKG_STATEDIR)"; \
	    if [ -f $(DESTDIR)/run/overlay-agent/identity.json ] && [ ! -e $(DESTDIR)$(PKG_STATEDIR)/identity.json ]; then \
	      install -d -m 0700 $(DESTDIR)$(PKG_STATEDIR) && install -m 0600 $(DESTDIR)/run/overlay-agent/identity.json $(DESTDIR)$(PKG_STATEDIR)/ && \
	      echo "copied the machine identity to $(DESTDIR)$(PKG_STATEDIR)/identity.json"; \
	    fi; \
	  fi; \
	  echo "kept the existing $(DESTDIR)$(PKG_CONFDIR)/agent.toml (this version's default: $(DESTDIR)$(PKG_DOCDIR)/agent.default.toml)"; \
	else \
	  echo "install -m 0600 packaging/agent.toml $(DESTDIR)$(PKG_CONFDIR)/agent.toml"; \
	  install -m 0600 packaging/agent.toml $(DESTDIR)$(PKG_CONFDIR)/agent.toml; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then echo "systemctl daemon-reload"; systemctl daemon-reload; fi
	@echo
	@echo "overlay-agent installed. Next steps:"
	@echo "  1. Open vSwitch running (apt-get install openvswitch-switch) and an etcd reachable from every host."
	@echo "  2. Edit $(PKG_CONFDIR)/agent.toml: underlay_ip (required), [etcd] endpoints; every key is documented there."
	@echo "  3. systemctl daemon-reload && systemctl enable --now overlay-agent"
	@echo "  4. overlay-agent status; journalctl -u overlay-agent -f"
	@echo "  Upgrading? systemctl restart overlay-agent (SIGTERM leaves the data plane up)."
	@echo "  Docker: systemctl enable --now overlay-docker-plugin, then"
	@echo "    docker network create -d overlay-agent --ipam-driver overlay-agent --ipam-opt tenant=red red"
	@echo "  CNI (podman, containerd, CRI-O): $(CNI_BIN_DIR)/overlay-cni; example network: $(PKG_DOCDIR)/overlay-red.conflist"

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl cat overlay-agent.service >/dev/null 2>&1; then \
	  echo "systemctl disable --now overlay-agent (tunnels and container ports stay up)"; \
	  systemctl disable --now overlay-agent.service || true; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && systemctl cat overlay-docker-plugin.service >/dev/null 2>&1; then \
	  echo "systemctl disable --now overlay-docker-plugin"; systemctl disable --now overlay-docker-plugin.service || true; \
	fi
	rm -f $(DESTDIR)$(PREFIX)/bin/overlay-agent $(DESTDIR)$(UNITDIR)/overlay-agent.service
	rm -f $(DESTDIR)$(CNI_BIN_DIR)/overlay-cni $(DESTDIR)$(UNITDIR)/overlay-docker-plugin.service
	rm -rf $(DESTDIR)$(PKG_DOCDIR)
	@if [ -n "$(PURGE)" ]; then echo "rm -rf $(DESTDIR)$(PKG_CONFDIR)"; rm -rf $(DESTDIR)$(PKG_CONFDIR); \
	else echo "kept $(DESTDIR)$(PKG_CONFDIR) (PURGE=1 removes it)"; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "overlay-agent uninstalled. Its OVS bridges and etcd records stay: remove them with ovs-vsctl / etcdctl if wanted."

# packaging/agent.toml must stay config/agent.example.toml minus underlay_ip (same keys and
# defaults), and the agent must accept it: without underlay_ip it must refuse exactly that, with
# one it must start (it then waits for an OVSDB that does not exist until `timeout` stops it).
packaging-check:
	@diff <(grep -v -e '^#' -e '^underlay_ip' config/agent.example.toml) <(grep -v '^#' packaging/agent.toml) \
	  || { echo "error: packaging/agent.toml and config/agent.example.toml differ in keys or values (above)" >&2; exit 1; }
	$(CARGO) build -p overlay-agent
	@out=$$(timeout 5 $(TARGET_DIR)/debug/overlay-agent run --config packaging/agent.toml 2>&1); rc=$$?; \
	  [ $$rc = 1 ] && grep -q "underlay_ip is required" <<<"$$out" \
	  || { echo "error: without underlay_ip the agent should refuse packaging/agent.toml (rc $$rc): $$out" >&2; exit 1; }
	@d=$$(mktemp -d); timeout 3 $(TARGET_DIR)/debug/overlay-agent run --config packaging/agent.toml --underlay-ip 192.0.2.1 \
	  --ovsdb unix:$$d/none.sock --api-socket $$d/api.sock >$$d/log 2>&1; rc=$$?; \
	  [ $$rc = 124 ] || { echo "error: the agent rejected packaging/agent.toml (rc $$rc):" >&2; cat $$d/log >&2; rm -rf $$d; exit 1; }; rm -rf $$d
	@# The units, with ExecStart pointing at the binary just built (verify wants it to exist).
	@if command -v systemd-analyze >/dev/null 2>&1; then \
	  for unit in overlay-agent overlay-docker-plugin; do \
	    d=$$(mktemp -d); sed "s|^ExecStart=/usr/local/bin/overlay-agent|ExecStart=$(abspath $(TARGET_DIR))/debug/overlay-agent|" \
	      packaging/$$unit.service > $$d/$$unit.service; \
	    out=$$(systemd-analyze verify $$d/$$unit.service 2>&1); rc=$$?; rm -rf $$d; \
	    if [ $$rc != 0 ] || [ -n "$$out" ]; then echo "error: systemd-analyze verify packaging/$$unit.service:" >&2; echo "$$out" >&2; exit 1; fi; \
	    echo "systemd-analyze verify packaging/$$unit.service: ok"; \
	  done; \
	else echo "packaging-check: no systemd-analyze here (apt-get install systemd): units not verified"; fi
	@# The example CNI network: valid JSON, and its plugin entry a configuration overlay-cni
	@# accepts (STATUS gets as far as asking an agent, which is not there: code 50).
	$(CARGO) build -p overlay-cni
	@for f in packaging/cni/*.conflist; do \
	  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$$f" || { echo "error: $$f is not valid JSON" >&2; exit 1; }; \
	  conf=$$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); p=dict(c["plugins"][0]); p.update(cniVersion="1.1.0", name=c["name"], agentSocket="/nonexistent/api.sock"); print(json.dumps(p))' "$$f"); \
	  out=$$(CNI_COMMAND=STATUS $(TARGET_DIR)/debug/overlay-cni <<<"$$conf"); \
	  grep -q '"code":50' <<<"$$out" || { echo "error: overlay-cni refused $$f: $$out" >&2; exit 1; }; \
	done; echo "packaging-check: ok: packaging/cni/*.conflist accepted by overlay-cni"
	@# make install over a config of an earlier release: its state_dir default (and an identity
	@# already made there) move to $(PKG_STATEDIR); nothing else in the file changes.
	@d=$$(mktemp -d); mkdir -p $$d$(PKG_CONFDIR) $$d/run/overlay-agent; \
	  sed 's|^state_dir = .*|$(OLD_STATE_DIR_LINE)|' packaging/agent.toml > $$d$(PKG_CONFDIR)/agent.toml; \
	  echo '{"id":"x"}' > $$d/run/overlay-agent/identity.json; \
	  $(MAKE) -s install DESTDIR=$$d NOBUILD=1 PKG_BIN=$(TARGET_DIR)/debug/overlay-agent PKG_CNI=$(TARGET_DIR)/debug/overlay-cni >$$d/log 2>&1 \
	  && diff <(grep -v '^state_dir' packaging/agent.toml) <(grep -v '^state_dir' $$d$(PKG_CONFDIR)/agent.toml) >/dev/null \
	  && grep -qx 'state_dir = "$(PKG_STATEDIR)"' $$d$(PKG_CONFDIR)/agent.toml \
	  && cmp -s $$d/run/overlay-agent/identity.json $$d$(PKG_STATEDIR)/identity.json \
	  || { echo "error: make install did not migrate an earlier release's state_dir:" >&2; cat $$d/log $$d$(PKG_CONFDIR)/agent.toml >&2; rm -rf $$d; exit 1; }; \
	  rm -rf $$d
	@echo "packaging-check: ok (packaging/agent.toml matches the example and loads; make install migrates an earlier state_dir)"

lint-scripts:
	@$(call pkg-ensure,shellcheck,shellcheck)
	@files=$$(find $(wildcard $(LINT_SCRIPT_DIRS)) -type f -name '*.sh' | sort); \
	if [ -z "$$files" ]; then echo "lint-scripts: no *.sh under $(LINT_SCRIPT_DIRS)"; exit 0; fi; \
	for f in $$files; do bash -n "$$f" || { echo "error: bash -n $$f failed" >&2; exit 1; }; done; \
	shellcheck --external-sources --source-path=SCRIPTDIR $$files || exit 1; \
	echo "lint-scripts: ok: bash -n and shellcheck on" $$files; \
	py=$$(find $(wildcard $(LINT_SCRIPT_DIRS)) -type f -name '*.py' | sort); \
	for f in $$py; do python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$$f" || exit 1; done; \
	[ -z "$$py" ] || echo "lint-scripts: ok: python3 parses" $$py

# Debian 12 packages Vagrant 2.3 (the apt candidate is checked first); where no vagrant package
# exists, only the Ruby syntax is checked. `vagrant validate` needs no box, VM or network.
vagrant-validate:
	@if ! command -v vagrant >/dev/null 2>&1; then \
	  cand=$$(apt-cache policy vagrant 2>/dev/null | sed -n 's/^ *Candidate: //p'); \
	  if [ -z "$$cand" ] || [ "$$cand" = "(none)" ]; then apt-get update -qq || true; \
	    cand=$$(apt-cache policy vagrant 2>/dev/null | sed -n 's/^ *Candidate: //p'); fi; \
	  if [ -n "$$cand" ] && [ "$$cand" != "(none)" ]; then $(call pkg-ensure,vagrant,vagrant); \
	  else echo "vagrant-validate: no vagrant package in this system's apt sources: checking Ruby syntax only"; fi; \
	fi
	@$(call pkg-ensure,ruby,ruby)
	ruby -c vagrant/Vagrantfile
	@if command -v vagrant >/dev/null 2>&1; then \
	  echo "cd vagrant && vagrant validate"; \
	  cd vagrant && VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate; \
	fi

# ---- Benchmarks ------------------------------------------------------------------------------
# make bench: every benchmark (ovsdb-client, openflow-client, the agent's plug, plugload,
# convergence, scale, dataplane and callgrind sections) of one run; writes the tables into
# docs/benchmarks.md between the markers (see scripts/bench.sh). Needs root; takes about 15-20
# minutes. BENCH_SECTIONS="plug scale" runs only those agent sections and leaves the doc alone
# (the report is in target/bench/agent.md).
.PHONY: bench
bench: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: make bench needs root (network namespaces, OVS)" >&2; exit 1; }
	@$(call pkg-ensure,valgrind,valgrind)
	CARGO="$(CARGO)" TARGET_DIR="$(TARGET_DIR)" bash scripts/bench.sh $(BENCH_SECTIONS)

# ---- The Vagrant demo's provisioning, without VMs ----------------------------------------------
# vagrant/provision/demo.sh itself (up, check, down) on each host of the netns demo, with a docker
# shim (containers as network namespaces running busybox httpd) and the agent built here. Needs
# root. Removes a running `make demo` first (it goes through scripts/demo.sh) and everything on exit.
.PHONY: provision-check
provision-check: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: make provision-check needs root (network namespaces, OVS)" >&2; exit 1; }
	$(CARGO) build -p overlay-agent
	bash scripts/provision-check.sh

# ---- Real kernels: qemu guests with OVS's kernel datapath, and the Vagrant demo for real -------
# make vm-test: three Debian 12 guests (image built from Debian packages with mmdebstrap, cached in
# /var/cache/overlay-agent-vm keyed on its inputs; KVM where /dev/kvm is real KVM, else TCG), the
# release agent in each on datapath_type=system, etcd on the host, Docker containers plugged with
# --pid; prints `ok`/`FAIL` per check and `N passed, M failed`. Needs root. See vm/vm-test.sh.
# make vagrant-up / vagrant-down: `vagrant up --provider=libvirt` of vagrant/ on a box built here
# from the same image (no download), through the demo's live check; down leaves no domain,
# network or volume. See vm/vagrant.sh.
.PHONY: vm-test vagrant-up vagrant-down
vm-test: deps old-agent
	@[ "$$(id -u)" = 0 ] || { echo "error: make vm-test needs root (qemu, taps, a bridge)" >&2; exit 1; }
	$(CARGO) build --release -p overlay-agent -p overlay-cni
	OLD_AGENT_DIR=$(OLD_AGENT_DIR) bash vm/vm-test.sh

vagrant-up: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: make vagrant-up needs root (libvirt)" >&2; exit 1; }
	$(CARGO) build --release -p overlay-agent -p overlay-cni
	bash vm/vagrant.sh up

vagrant-down:
	bash vm/vagrant.sh down
