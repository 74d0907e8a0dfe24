#!/usr/bin/env bash
# The port-per-(peer, tenant) design's cost in ovs-vswitchd: N tunnel ports on one netdev
# bridge (as the agent made them: protected, a remote_ip each, 20 keys), added with ovs-vsctl
# in chunks of 2,000; then the time of ONE more port (ovs-vsctl waits for cur_cfg, i.e. for
# ovs-vswitchd to apply it), of removing one, ovs-vswitchd's RSS and its idle CPU.
# docs/benchmarks.md cites its figures. Needs root and OVS; its own netns and OVS in a
# temporary directory.
#   scripts/scale/vswitchd-ports.sh [N (1000)] [vxlan|gre]
set -euo pipefail
N=${1:-1000}; T=${2:-vxlan}
# shellcheck source=scripts/scale/lib.sh
source "$(dirname "$0")/lib.sh"
scale_ovs_up scale-vs
ip -n "$NS" link add d0 type veth peer name d1
ip -n "$NS" addr add 198.18.0.1/16 dev d0; ip -n "$NS" link set d0 up; ip -n "$NS" link set d1 up
V=(ovs-vsctl --db="unix:$D/db.sock")
"${V[@]}" add-br br-tun -- set bridge br-tun datapath_type=netdev
python3 - "$N" "$T" > "$D/batch.txt" <<'PY'
import sys
n = int(sys.argv[1]); t = sys.argv[2]
for i in range(n):
    a, b = divmod(i + 2, 250)
    print(f"-- add-port br-tun t{i} -- set Interface t{i} type={t} options:remote_ip=198.18.{a}.{b+1} options:key={100+i%20} -- set Port t{i} protected=true")
PY
t0=$(date +%s%N)
# In chunks of 2,000 ports per transaction, as the agent wrote them.
split -l 2000 "$D/batch.txt" "$D/chunk."
for c in "$D"/chunk.*; do
  args=()
  while read -ra words; do args+=("${words[@]}"); done < "$c"
  "${V[@]}" --timeout=600 "${args[@]}"
done
t1=$(date +%s%N)
pid=$(cat "$D/vs.pid")
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
# Idle CPU over 5 s.
u0=$(awk '{print $14+$15}' "/proc/$pid/stat"); sleep 5; u1=$(awk '{print $14+$15}' "/proc/$pid/stat")
ts=()
for k in 1 2 3 4 5; do
  a=$(date +%s%N)
  "${V[@]}" add-port br-tun "x$k" -- set Interface "x$k" type="$T" options:remote_ip="198.18.200.$k" \
    options:key=7 -- set Port "x$k" protected=true
  b=$(date +%s%N)
  ts+=($(( (b-a)/1000000 )))
done
c=$(date +%s%N); "${V[@]}" del-port br-tun x1; d=$(date +%s%N)
echo "N=$N type=$T batch_apply_ms=$(( (t1-t0)/1000000 )) vswitchd_rss=${rss}kB idle_ticks_5s=$((u1-u0)) one_more_port_ms=${ts[*]} del_port_ms=$(( (d-c)/1000000 ))"
