#!/usr/bin/env bash
# Every node: Open vSwitch on the kernel datapath, Docker, the tools the demo uses, and a
# stable OVS system-id (the machine identity the agent registers in etcd). Idempotent: run it
# again (vagrant provision --provision-with common) and it only fixes what is missing.
# Env (from the Vagrantfile): NODE_IP, this node's address on the private network.
set -euo pipefail

: "${NODE_IP:?set NODE_IP to the private network address of this node}"

log() { printf '== common: %s\n' "$*"; }

# The tunnels' datapath: OVS itself, VXLAN and GRE vports (they pull in vxlan, ip_gre, gre),
# and veth for the containers. Loaded now and at every boot.
MODULES=(openvswitch vport_vxlan vport_gre veth)
PACKAGES=(openvswitch-switch docker.io iproute2 etcd-client jq uuid-runtime make curl ca-certificates)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "packages present"
fi

log "kernel modules: ${MODULES[*]}"
for m in "${MODULES[@]}"; do
  if ! modprobe "$m"; then
    echo "error: cannot load kernel module $m (is linux-modules-$(uname -r) installed?)" >&2
    exit 1
  fi
done
printf '%s\n' "# overlay-agent demo (vagrant/provision/common.sh)" "${MODULES[@]}" \
  >/etc/modules-load.d/overlay-agent.conf

systemctl enable --now --quiet openvswitch-switch.service docker.service
for _ in $(seq 60); do
  ovs-vsctl --timeout=5 show >/dev/null 2>&1 && break
  sleep 1
done
ovs-vsctl --timeout=5 show >/dev/null || { echo "error: Open vSwitch does not answer" >&2; exit 1; }

# Docker sets the filter FORWARD chain's policy to DROP, and a drop in any table's forward chain
# drops: the agent's gateways forward between their routers (host ends ovt-<VNI>) and the
# underlay, so without these rules containers would reach nothing outside. DOCKER-USER is the
# chain Docker leaves to the operator; a drop-in adds them whenever Docker starts (after a reboot).
gw_rule() { echo "iptables -C DOCKER-USER $1 ovt-+ -j ACCEPT 2>/dev/null || iptables -I DOCKER-USER $1 ovt-+ -j ACCEPT"; }
mkdir -p /etc/systemd/system/docker.service.d
printf '%s\n' "# overlay-agent demo (vagrant/provision/common.sh): the gateways' forwarding past Docker's FORWARD DROP" \
  "[Service]" "ExecStartPost=/bin/sh -c '$(gw_rule -i)'" "ExecStartPost=/bin/sh -c '$(gw_rule -o)'" \
  >/etc/systemd/system/docker.service.d/overlay-agent-gateway.conf
systemctl daemon-reload
sh -c "$(gw_rule -i)" && sh -c "$(gw_rule -o)"
log "DOCKER-USER accepts the gateways' forwarding: $(iptables -S DOCKER-USER | grep ovt- | paste -sd';')"

# system-id: Debian's ovs-ctl writes /etc/openvswitch/system-id.conf into OVSDB at every start,
# so the file and the database must agree or the id would change at the next OVS restart (and
# the agent, which identifies this machine by it, would be refused its own hostname).
ID_FILE=/etc/openvswitch/system-id.conf
db_id=$(ovs-vsctl --timeout=5 --if-exists get Open_vSwitch . external_ids:system-id | tr -d '"')
if [ -s "$ID_FILE" ]; then
  id=$(tr -d '[:space:]' <"$ID_FILE")
elif [ -n "$db_id" ]; then
  id=$db_id
else
  id=$(uuidgen)
fi
[ -s "$ID_FILE" ] || echo "$id" >"$ID_FILE"
if [ "$db_id" != "$id" ]; then
  ovs-vsctl --timeout=5 set Open_vSwitch . external_ids:system-id="$id"
  log "OVS system-id set to $id"
else
  log "OVS system-id $id"
fi

# The underlay: the agent's tunnels run between the nodes' private addresses. grep reads all of
# ip's output: with -q it would stop at the match and, under pipefail, ip's SIGPIPE would fail
# the test on a host with many interfaces.
if ! ip -o addr show | grep -F " $NODE_IP/" >/dev/null; then
  echo "error: $NODE_IP is not on any interface: check the Vagrantfile's private_network" >&2
  ip -br addr >&2
  exit 1
fi
log "underlay $NODE_IP on $(ip -o addr show | grep -F " $NODE_IP/" | awk '{print $2}'), OVS $(ovs-vswitchd --version | awk 'NR==1 {print $NF}'), kernel $(uname -r)"
