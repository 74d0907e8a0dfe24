#!/usr/bin/env bash
# node1 only: a one-member etcd (Debian's etcd-server) where every agent meets. It listens on
# the private network address (for the other nodes) and on 127.0.0.1. Idempotent.
# Env (from the Vagrantfile): NODE_IP.
set -euo pipefail

: "${NODE_IP:?set NODE_IP to the private network address of this node}"

log() { printf '== etcd: %s\n' "$*"; }

export DEBIAN_FRONTEND=noninteractive
if ! dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
  log "installing etcd-server"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
fi

# Debian's etcd.service reads /etc/default/etcd; the member name (the hostname), data dir and
# peer URL stay at the package's defaults. No TLS or auth: this is a demo on a private network.
CONF=/etc/default/etcd
want=$(cat <<CONF
# Managed by vagrant/provision/etcd.sh (overlay-agent demo); rewritten at every provisioning.
ETCD_LISTEN_CLIENT_URLS="http://$NODE_IP:2379,http://127.0.0.1:2379"
ETCD_ADVERTISE_CLIENT_URLS="http://$NODE_IP:2379"
CONF
)
if [ "$(cat "$CONF" 2>/dev/null || true)" != "$want" ]; then
  printf '%s\n' "$want" >"$CONF"
  log "wrote $CONF; restarting etcd"
  systemctl enable --quiet etcd.service
  systemctl restart etcd.service
else
  systemctl enable --now --quiet etcd.service
fi

for _ in $(seq 60); do
  etcdctl --endpoints "http://$NODE_IP:2379" endpoint health >/dev/null 2>&1 && break
  sleep 1
done
if ! etcdctl --endpoints "http://$NODE_IP:2379" endpoint health; then
  journalctl -u etcd.service -n 30 --no-pager >&2 || true
  echo "error: etcd does not answer on http://$NODE_IP:2379" >&2
  exit 1
fi
log "etcd $(etcd --version | awk '/etcd Version/ {print $3}') serving http://$NODE_IP:2379"
