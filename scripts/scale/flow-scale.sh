#!/usr/bin/env bash
# The flow design's cost in ovs-vswitchd at PEERS x TENANTS: 20 tunnel ports (one per tenant,
# key = VNI, remote_ip=flow) on a fail_mode=secure br-tun, and per tenant PEERS unicast flows,
# PEERS ARP responders and one flood flow, loaded with ovs-ofctl. Times: loading the flows,
# one peer joining (20 unicast flows in one bundle), one more port on br-int (a plug);
# ovs-vswitchd's RSS. docs/benchmarks.md cites its figures. Needs root and OVS; its own netns
# and OVS in a temporary directory.
#   scripts/scale/flow-scale.sh [PEERS (1000)] [TENANTS (20)]
set -euo pipefail
PEERS=${1:-1000}; TEN=${2:-20}
# shellcheck source=scripts/scale/lib.sh
source "$(dirname "$0")/lib.sh"
scale_ovs_up flow-scale
V=(ip netns exec "$NS" ovs-vsctl --db="unix:$D/db.sock" --timeout=120)
"${V[@]}" add-br br-int -- set bridge br-int datapath_type=netdev
"${V[@]}" add-br br-tun -- set bridge br-tun datapath_type=netdev fail_mode=secure
"${V[@]}" add-port br-int patch-tun -- set interface patch-tun type=patch options:peer=patch-int ofport_request=1
"${V[@]}" add-port br-tun patch-int -- set interface patch-int type=patch options:peer=patch-tun ofport_request=1
for t in $(seq "$TEN"); do
  "${V[@]}" add-port br-tun "t$t" -- set interface "t$t" type=vxlan options:key=$((100+t)) \
    options:remote_ip=flow ofport_request=$((10+t))
done
python3 - "$PEERS" "$TEN" > "$D/flows.txt" <<'PY'
import sys
peers, ten = int(sys.argv[1]), int(sys.argv[2])
def ip(j): return f"198.18.{(j+2)//250}.{(j+2)%250+1}"
def mac(t,j): return "02:%02x:%02x:%02x:00:01" % (t, j>>8, j&255)
def cip(j): return f"10.{j>>8}.{j&255}.1"
for t in range(1, ten+1):
    port = 10+t; flood=""
    for j in range(peers):
        m = mac(t,j)
        print(f"table=1,priority=20,dl_vlan={t},arp,arp_op=1,arp_tpa={cip(j)},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{m}->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{m}->arp_sha,set_field:{cip(j)}->arp_spa,IN_PORT")
        print(f"table=1,priority=10,dl_vlan={t},dl_dst={m},actions=pop_vlan,set_field:{ip(j)}->tun_dst,output:{port}")
        flood += f",set_field:{ip(j)}->tun_dst,output:{port}"
    print(f"table=1,priority=5,dl_vlan={t},actions=pop_vlan{flood}")
    print(f"table=0,priority=10,in_port={port},actions=mod_vlan_vid:{t},output:1")
print("table=0,priority=10,in_port=1,actions=resubmit(,1)")
PY
OF=(ip netns exec "$NS" ovs-ofctl -O OpenFlow13)
a=$(date +%s%N); "${OF[@]}" add-flows "unix:$D/br-tun.mgmt" "$D/flows.txt"; b=$(date +%s%N)
echo "flows: $(wc -l < "$D/flows.txt") loaded in $(( (b-a)/1000000 )) ms"
# One peer joins: its unicast flow in each tenant, in one bundle.
python3 - "$PEERS" "$TEN" > "$D/join.txt" <<'PY'
import sys
peers, ten = int(sys.argv[1]), int(sys.argv[2])
for t in range(1, ten+1):
    print(f"add table=1,priority=10,dl_vlan={t},dl_dst=02:ff:ff:ff:00:{t:02x},actions=pop_vlan,set_field:198.18.250.250->tun_dst,output:{10+t}")
PY
a=$(date +%s%N)
"${OF[@]}" --bundle add-flows "unix:$D/br-tun.mgmt" "$D/join.txt" 2>/dev/null || "${OF[@]}" add-flows "unix:$D/br-tun.mgmt" "$D/join.txt"
b=$(date +%s%N)
echo "peer join (20 unicast flows): $(( (b-a)/1000000 )) ms incl. ovs-ofctl start"
for k in 1 2 3; do
  ip -n "$NS" link add "vp$k" type veth peer name "vq$k"; ip -n "$NS" link set "vp$k" up
  a=$(date +%s%N); "${V[@]}" add-port br-int "vp$k" tag=1; b=$(date +%s%N)
  echo "plug port $k on br-int: $(( (b-a)/1000000 )) ms"
done
echo "vswitchd RSS: $(awk '/VmRSS/{print $2}' "/proc/$(cat "$D/vs.pid")/status") kB"
