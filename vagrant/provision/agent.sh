#!/usr/bin/env bash
# Every node: install overlay-agent with the repository's own `make install` (binary, systemd
# unit, default config), write this node's /etc/overlay-agent/agent.toml, start the service and
# wait until it has registered in etcd and answers on its API socket. Idempotent: the service is
# restarted only when the binary, the unit or the config changed (SIGTERM leaves the data plane
# up, and the agent re-attaches to its etcd registration).
#
# The binaries: /vagrant/target/release/overlay-agent and overlay-cni (which `make install`
# puts in place too), built on the host with
#   cargo build --release -p overlay-agent -p overlay-cni
# and synced here by the Vagrantfile. When either is absent or cannot run here (built on macOS,
# or against a newer glibc than Debian 12's 2.36), both are built in this VM instead (rustup +
# cargo: slower, but it needs nothing from the host).
#
# Env (from the Vagrantfile): NODE_NAME, NODE_IP, ETCD_ENDPOINTS (comma-separated URLs).
set -euo pipefail

: "${NODE_NAME:?set NODE_NAME to the hostname of this node}"
: "${NODE_IP:?set NODE_IP to the private network address of this node}"
: "${ETCD_ENDPOINTS:?set ETCD_ENDPOINTS, e.g. http://192.168.56.11:2379}"

SRC=${OVERLAY_SRC:-/vagrant}
BIN=$SRC/target/release/overlay-agent
CNI=$SRC/target/release/overlay-cni
CONF=${OVERLAY_AGENT_CONF:-/etc/overlay-agent/agent.toml}
BUILD_DIR=/var/cache/overlay-agent-build    # target dir of an in-VM build

log() { printf '== agent: %s\n' "$*"; }

build_in_vm() {
  log "building overlay-agent and overlay-cni in the VM (no usable binaries from the host); this takes a few minutes"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends build-essential protobuf-compiler curl ca-certificates >/dev/null
  export CARGO_HOME=/root/.cargo RUSTUP_HOME=/root/.rustup
  export PATH=$CARGO_HOME/bin:$PATH
  if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --quiet --profile minimal --default-toolchain stable
  fi
  CARGO_TARGET_DIR=$BUILD_DIR cargo build --release --locked -p overlay-agent -p overlay-cni \
    --manifest-path "$SRC/Cargo.toml"
  install -D -m 0755 "$BUILD_DIR/release/overlay-agent" "$BIN"
  install -D -m 0755 "$BUILD_DIR/release/overlay-cni" "$CNI"
}

[ -f "$SRC/Makefile" ] || { echo "error: $SRC has no checkout of the repository: run 'vagrant rsync'" >&2; exit 1; }
# Whether binary $1 runs here (a CNI plugin answers CNI_COMMAND=VERSION, not --version).
runs() { [ -x "$1" ] && CNI_COMMAND=VERSION "$1" --version </dev/null >/dev/null 2>&1; }
if runs "$BIN" && runs "$CNI"; then
  log "using $BIN ($("$BIN" --version)) built on the host"
else
  for b in "$BIN" "$CNI"; do
    [ ! -e "$b" ] || runs "$b" || log "$b does not run here: $(CNI_COMMAND=VERSION "$b" --version </dev/null 2>&1 | head -n 1 || true)"
  done
  build_in_vm
fi

fingerprint() {  # checksums of what the service runs (missing files are left out)
  sha256sum /usr/local/bin/overlay-agent /etc/systemd/system/overlay-agent.service "$CONF" 2>/dev/null || true
}
before=$(fingerprint)

# The packaging under test: the same target an operator runs (it never overwrites a config).
make -s -C "$SRC" install NOBUILD=1 >/dev/null

# This node's config: the packaged default with the demo's values filled in. The provisioner
# owns this file, so it is rewritten every time (edit the template, not the VM's copy).
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
IFS=, read -ra endpoints <<<"$ETCD_ENDPOINTS"
etcd_toml=$(printf '"%s", ' "${endpoints[@]}")
sed -e "s|^# underlay_ip = .*|underlay_ip = \"$NODE_IP\"|" \
    -e "s|^# hostname = .*|hostname = \"$NODE_NAME\"|" \
    -e "s|^endpoints = .*|endpoints = [${etcd_toml%, }]|" \
    -e "s|^datapath_type = .*|datapath_type = \"system\"|" \
    "$SRC/packaging/agent.toml" >"$tmp"
for key in "underlay_ip = \"$NODE_IP\"" "hostname = \"$NODE_NAME\"" "endpoints = [" 'datapath_type = "system"'; do
  grep -qF "$key" "$tmp" || { echo "error: packaging/agent.toml changed shape: could not set '$key'" >&2; exit 1; }
done
if ! cmp -s "$tmp" "$CONF"; then
  install -m 0600 "$tmp" "$CONF"
  log "wrote $CONF: hostname $NODE_NAME, underlay_ip $NODE_IP, etcd $ETCD_ENDPOINTS, datapath system"
fi

systemctl daemon-reload
systemctl enable --quiet overlay-agent.service
if [ "$before" != "$(fingerprint)" ] && systemctl is-active --quiet overlay-agent.service; then
  log "binary, unit or config changed: restarting overlay-agent"
  systemctl restart overlay-agent.service
else
  systemctl reset-failed overlay-agent.service 2>/dev/null || true   # after an earlier bad config
  systemctl start overlay-agent.service
fi
restarts0=$(systemctl show -p NRestarts --value overlay-agent.service)

# The API socket appears once the agent has reached OVSDB and registered in etcd (on node2 and
# node3 that waits for node1's etcd when the VMs come up in parallel).
log "waiting for the agent to register in etcd and serve its API"
for _ in $(seq 300); do
  overlay-agent status >/dev/null 2>&1 && break
  # A bad config fails at once and is restarted every 2 s: no point waiting the full time.
  if systemctl is-failed --quiet overlay-agent.service \
     || [ "$(systemctl show -p NRestarts --value overlay-agent.service)" -ge $((restarts0 + 3)) ]; then
    break
  fi
  sleep 1
done
if ! overlay-agent status; then
  journalctl -u overlay-agent.service -n 40 --no-pager >&2 || true
  echo "error: overlay-agent is not up on $NODE_NAME (journalctl -u overlay-agent)" >&2
  exit 1
fi
