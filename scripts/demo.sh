#!/usr/bin/env bash
# The one-machine demo: etcd, three "hosts" (network namespaces, each with its own ovsdb-server
# and ovs-vswitchd on the userspace datapath) and an overlay-agent per host, two tenants with the
# SAME CIDR (red over VXLAN, blue over GRE), containers plugged on every host, then a live check
# of same-tenant connectivity, cross-tenant isolation and egress: every container reaches an
# "outside" server (198.18.100.1, routed by the underlay bridge) through its host's gateway,
# seen from there with its host's underlay address.
#   scripts/demo.sh up      build it (removes an earlier demo first)
#   scripts/demo.sh hosts   only etcd and the three hosts with their agents (no tenants, no
#                           containers; removes an earlier demo first): for scripts/provision-check.sh
#   scripts/demo.sh down    remove every trace
# Host setup is the one the tests use (testbed/src/fabric.rs) and ../shared/lab/overlay-lab.sh.
set -euo pipefail

P=ovd                                  # prefix of every namespace and link the demo makes
RUN=/run/overlay-demo                  # pidfiles, sockets, logs, databases
ETCD_PORT=23799
ETCD=http://127.0.0.1:$ETCD_PORT
PREFIX=/overlay-demo
TOP=$(cd "$(dirname "$0")/.." && pwd)
AGENT=${AGENT:-${CARGO_TARGET_DIR:-$TOP/target}/debug/overlay-agent}
HOSTS=(1 2 3)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
vs() { local i=$1; shift; ovs-vsctl --timeout=10 --db="unix:$RUN/h$i/db.sock" "$@"; }
cli() { local i=$1; shift; "$AGENT" --api-socket "$RUN/h$i/api.sock" "$@"; }

down() {
  local f sig
  for sig in TERM KILL; do
    for f in "$RUN"/*.pid "$RUN"/*/*.pid; do
      if [ -f "$f" ]; then kill -s "$sig" "$(cat "$f")" 2>/dev/null || true; fi
    done
    if [ "$sig" = TERM ]; then sleep 0.3; fi
  done
  # The agents' router namespaces are pinned by bind mounts: they outlive the agents by design.
  local pin
  for pin in "$RUN"/h*/state/netns/*; do
    if [ -e "$pin" ]; then umount -l "$pin" 2>/dev/null || true; fi
  done
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -rf "$RUN"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; return 1; fi
    sleep 0.1
  done
}

start_etcd() {
  mkdir -p "$RUN/etcd"
  etcd --name demo --data-dir "$RUN/etcd/data" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls http://127.0.0.1:$((ETCD_PORT + 1)) \
    --initial-advertise-peer-urls http://127.0.0.1:$((ETCD_PORT + 1)) \
    --initial-cluster demo=http://127.0.0.1:$((ETCD_PORT + 1)) >"$RUN/etcd/etcd.log" 2>&1 &
  echo $! >"$RUN/etcd.pid"
  wait_for 20 etcd env ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint health
}

start_host() {
  local i=$1
  local H=$P-h$i D=$RUN/h$i
  mkdir -p "$D"
  ip netns add "$H"; ip -n "$H" link set lo up
  ip link add "$P-u$i" type veth peer name "$P-f$i"
  ip link set "$P-f$i" netns "$P-fab"; ip -n "$P-fab" link set "$P-f$i" master br0 up
  ip link set "$P-u$i" netns "$H"; ip -n "$H" link set "$P-u$i" name eth1; ip -n "$H" link set eth1 up
  ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec "$H" ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb.pid" \
    --detach --log-file="$D/ovsdb.log" --unixctl="$D/ovsdb.ctl"
  vs "$i" --no-wait init -- set Open_vSwitch . "external_ids:system-id=demo-h$i"
  # Each vswitchd gets its own run dir: bridges of the same name on several hosts must not
  # share management sockets.
  OVS_RUNDIR=$D ip netns exec "$H" ovs-vswitchd "unix:$D/db.sock" --pidfile="$D/vswitchd.pid" --detach \
    --log-file="$D/vswitchd.log" --unixctl="$D/vswitchd.ctl"
  # The userspace datapath tunnels from an OVS bridge that holds the NIC and the underlay IP.
  vs "$i" add-br br-phy -- set bridge br-phy datapath_type=netdev \
    other_config:hwaddr="$(ip netns exec "$H" cat /sys/class/net/eth1/address)" -- add-port br-phy eth1
  ip -n "$H" addr add "198.18.0.$i/24" dev br-phy; ip -n "$H" link set br-phy up
  ip -n "$H" route add default via 198.18.0.254
  "$AGENT" run --hostname "demo-h$i" --underlay-ip "198.18.0.$i" --etcd-endpoints "$ETCD" \
    --etcd-prefix "$PREFIX" --ovsdb "unix:$D/db.sock" --datapath-type netdev \
    --host-netns "/var/run/netns/$H" --api-socket "$D/api.sock" --state-dir "$D/state" --ovs-rundir "$D" --config /dev/null \
    >"$D/agent.log" 2>&1 &
  echo $! >"$D/agent.pid"
}

plug() {  # plug HOST TENANT NAME -> prints the IP
  local i=$1 t=$2 c=$P-$3
  ip netns add "$c"; ip -n "$c" link set lo up
  cli "$i" plug "$3" --tenant "$t" --netns "/var/run/netns/$c" | sed -n 's/.*"ip":"\([^"]*\)".*/\1/p'
}

hosts() {  # etcd, the underlay and the three hosts with their agents: no tenants, no containers
  [ -x "$AGENT" ] || { echo "error: $AGENT not built: run make demo (it builds it)" >&2; exit 1; }
  down
  mkdir -p "$RUN"
  say "etcd on $ETCD"
  start_etcd
  say "three hosts: netns $P-h1..3 on an underlay bridge (198.18.0.0/24), each with its own OVS and agent;"
  echo "   the bridge routes to an outside network: netns $P-out, 198.18.100.1, an iperf3 server"
  ip netns add "$P-fab"; ip -n "$P-fab" link add br0 type bridge; ip -n "$P-fab" link set br0 up
  # The underlay bridge routes (198.18.0.254) to the outside network.
  ip -n "$P-fab" addr add 198.18.0.254/24 dev br0
  ip netns exec "$P-fab" sysctl -q -w net.ipv4.ip_forward=1
  ip netns add "$P-out"; ip -n "$P-out" link set lo up
  ip link add "$P-o0" type veth peer name "$P-o1"
  ip link set "$P-o0" netns "$P-fab"; ip link set "$P-o1" netns "$P-out"
  ip -n "$P-fab" addr add 198.18.100.254/24 dev "$P-o0"; ip -n "$P-fab" link set "$P-o0" up
  ip -n "$P-out" link set "$P-o1" name eth0; ip -n "$P-out" addr add 198.18.100.1/24 dev eth0
  ip -n "$P-out" link set eth0 up; ip -n "$P-out" route add default via 198.18.100.254
  ip netns exec "$P-out" iperf3 -s -D -B 198.18.100.1 --pidfile "$RUN/outside-iperf.pid" \
    --logfile "$RUN/outside-iperf.log"
  for i in "${HOSTS[@]}"; do start_host "$i"; done
  for i in "${HOSTS[@]}"; do wait_for 20 "agent on host $i" cli "$i" status; done
}

up() {
  hosts

  say "two tenants with the same CIDR: red over VXLAN, blue over GRE"
  cli 1 tenant create red --vni 100 --cidr 198.19.0.0/16 --tunnel vxlan
  cli 1 tenant create blue --vni 200 --cidr 198.19.0.0/16 --tunnel gre

  say "containers: one red and one blue on every host"
  declare -gA IP
  for i in "${HOSTS[@]}"; do
    IP[red$i]=$(plug "$i" red "red$i")
    IP[blue$i]=$(plug "$i" blue "blue$i")
  done
  # A blue container with an address no red container has, for the isolation check.
  ip netns add "$P-blueonly"; ip -n "$P-blueonly" link set lo up
  IP[blueonly]=$(cli 3 plug blueonly --tenant blue --netns "/var/run/netns/$P-blueonly" --ip 198.19.250.250 \
    | sed -n 's/.*"ip":"\([^"]*\)".*/\1/p')

  say "topology"
  printf '%-10s %-12s %-10s %s\n' HOST UNDERLAY CONTAINER "TENANT / IP"
  for i in "${HOSTS[@]}"; do
    for t in red blue; do
      printf '%-10s %-12s %-10s %s\n' "demo-h$i" "198.18.0.$i" "$P-$t$i" "$t / ${IP[$t$i]}"
    done
  done
  printf '%-10s %-12s %-10s %s\n' demo-h3 198.18.0.3 "$P-blueonly" "blue / ${IP[blueonly]}"
  for i in "${HOSTS[@]}"; do
    echo; echo "--- overlay-agent status on demo-h$i"; cli "$i" status
  done

  say "live check"
  local ok=0 bad=0
  for t in red blue; do
    for i in "${HOSTS[@]}"; do for j in "${HOSTS[@]}"; do
      [ "$i" = "$j" ] && continue
      if ip netns exec "$P-$t$i" ping -c 1 -W 2 "${IP[$t$j]}" >/dev/null 2>&1 \
         || ip netns exec "$P-$t$i" ping -c 2 -W 2 "${IP[$t$j]}" >/dev/null 2>&1; then
        echo "  ok    $t$i -> $t$j (${IP[$t$j]})"; ok=$((ok + 1))
      else
        echo "  FAIL  $t$i -> $t$j (${IP[$t$j]})"; bad=$((bad + 1))
      fi
    done; done
  done
  if ip netns exec "$P-red1" ping -c 2 -W 1 "${IP[blueonly]}" >/dev/null 2>&1; then
    echo "  FAIL  red1 reached blue-only ${IP[blueonly]}: tenants are not isolated"; bad=$((bad + 1))
  else
    echo "  ok    red1 cannot reach blue-only ${IP[blueonly]} (isolation)"; ok=$((ok + 1))
  fi
  # Egress: each container to the outside server, which must see its host's underlay address.
  local seen
  for t in red blue; do
    for i in "${HOSTS[@]}"; do
      if wait_for 20 "$t$i's gateway" ip netns exec "$P-$t$i" iperf3 -c 198.18.100.1 -t 1; then
        seen=$(grep -o 'Accepted connection from [0-9.]*' "$RUN/outside-iperf.log" | tail -1 | awk '{print $4}')
        if [ "$seen" = "198.18.0.$i" ]; then
          echo "  ok    $t$i -> outside 198.18.100.1 over TCP, seen there as its host demo-h$i ($seen)"
          ok=$((ok + 1))
        else
          echo "  FAIL  $t$i -> outside: the server saw $seen, not demo-h$i's 198.18.0.$i"; bad=$((bad + 1))
        fi
      else
        echo "  FAIL  $t$i cannot reach the outside server 198.18.100.1"; bad=$((bad + 1))
      fi
    done
  done
  echo "  $ok passed, $bad failed"

  say "poke at it"
  cat <<EOF
  ip netns exec $P-red1 ping ${IP[red2]}                # red1 -> red2 across hosts (VXLAN)
  ip netns exec $P-blue1 ping ${IP[blue3]}              # blue1 -> blue3 across hosts (GRE)
  ip netns exec $P-red2 iperf3 -c 198.18.100.1         # red2 -> the outside, through demo-h2's gateway
  ip netns exec $P-h1 nft list table ip overlay_agent   # demo-h1's NAT and guard rules
  $AGENT --api-socket $RUN/h1/api.sock status
  $AGENT --api-socket $RUN/h1/api.sock endpoints
  ovs-vsctl --db=unix:$RUN/h1/db.sock show
  tail -f $RUN/h1/agent.log
  make demo-down                                        # removes everything
EOF
  [ "$bad" = 0 ]
}

case "${1:-}" in
  up) up ;;
  hosts) hosts; echo "demo hosts up: agents on $RUN/h{1,2,3}/api.sock, etcd $ETCD prefix $PREFIX" ;;
  down) down; echo "demo removed" ;;
  *) echo "usage: $0 up | hosts | down" >&2; exit 2 ;;
esac
