#!/usr/bin/env bash
# make vm-test: the agent on real kernels. Three Debian 12 guests (stock 6.1 kernel, Open vSwitch
# kernel datapath, Docker) on a bridge of this host, the overlay-agent built from this checkout
# installed in each by the Vagrant demo's own provisioning (vagrant/provision/common.sh and
# agent.sh: `make install`, the systemd unit, datapath_type = "system"), one etcd on the host,
# real Docker containers started with --net=none and plugged with `overlay-agent plug --pid`,
# then the multi-host checks. Each check prints `ok  <name>` or `FAIL <name>: <why>`; the last
# line is `N passed, M failed`; the exit status is non-zero on any failure.
#   vm/vm-test.sh            (root; the release binaries built: cargo build --release -p overlay-agent -p overlay-cni)
#   OVERLAY_VM_KEEP=1 vm/vm-test.sh   the same, but the guests, containers and etcd stay up
#                                     at the end, for a check to be run again:
#   vm/vm-test.sh check NAME...       runs check functions (check_l2pop, check_gateway ...)
#                                     against the kept guests
#   vm/vm-test.sh down                removes what a kept run left
# etcd runs on the host, not in a guest: guests are emulated (TCG) here and every guest's CPU goes
# to its agent, OVS and containers; a host etcd also outlives any guest's restart and lets the
# checks read etcd directly.
# Everything is removed on exit, on failure and on Ctrl-C too: guests, taps, bridge, etcd, run
# dir. On failure the guests' consoles and agent journals are kept in target/vm-test/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vm/lib.sh
. "$HERE/lib.sh"
# shellcheck source=vm/image.sh
. "$HERE/image.sh"

VM_RUN=/run/overlay-vm-test
VM_SHARE=$VM_RUN/share
VM_BRIDGE=ovvm-br0
VM_TAP=ovvm-t
VM_NET=${OVERLAY_VM_NET:-198.18.200}
VM_MEM=${OVERLAY_VM_MEMORY:-768}
GUESTS=(1 2 3)
TARGET=${CARGO_TARGET_DIR:-$VM_TOP/target}
AGENT=${AGENT:-$TARGET/release/overlay-agent}
CNI=${CNI:-$TARGET/release/overlay-cni}
LOGS=$TARGET/vm-test
ETCD=http://$VM_NET.1:2379
BOOT_TIMEOUT=${OVERLAY_VM_BOOT_TIMEOUT:-900}
# Per container: address, MTU, MAC, port on br-int, PID; per tenant: VNI.
declare -A IP MTU MAC PORT PID
declare -A VNI=([red]=100 [blue]=200)

# The flow pipeline's checks, and the upgrade from the port-per-peer release.
# shellcheck source=vm/flows.sh
. "$HERE/flows.sh"
# shellcheck source=vm/upgrade.sh
. "$HERE/upgrade.sh"
# shellcheck source=vm/gateway.sh
. "$HERE/gateway.sh"

# ---- setup and teardown ----------------------------------------------------------------------

cleanup() {  # cleanup [EXIT_STATUS]: a failed run keeps its logs first
  local rc=${1:-0}
  local pid
  if [ -d "$VM_RUN" ]; then
    if [ "$rc" != 0 ]; then save_logs || true; fi
    vm_kill_all || log "warning: removing the guests, taps or bridge failed"
    outside_down || log "warning: removing the outside namespace failed"
    if pid=$(cat "$VM_RUN/etcd.pid" 2>/dev/null) && grep -qa etcd "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    fi
    rm -rf "$VM_RUN"
  fi
}

save_logs() {
  local i
  rm -rf "$LOGS"; mkdir -p "$LOGS"
  for i in "${GUESTS[@]}"; do
    cp "$VM_RUN/vm$i.console" "$LOGS/" 2>/dev/null || true
    cp "$VM_RUN/setup-vm$i.log" "$LOGS/" 2>/dev/null || true
    if vm_alive "$i"; then
      vm_ssh "$i" 'journalctl -u overlay-agent --no-pager -n 300; ovs-vsctl show; ovs-dpctl show; docker ps -a' \
        >"$LOGS/vm$i.agent.log" 2>&1 || true
    fi
  done
  cp "$VM_RUN/etcd.log" "$LOGS/" 2>/dev/null || true
  log "logs of this run: $LOGS"
}

preflight() {
  [ "$(id -u)" = 0 ] || die "vm-test needs root (qemu with taps, a bridge, etcd)"
  if [ ! -x "$AGENT" ] || [ ! -x "$CNI" ]; then
    die "$AGENT or $CNI is missing: cargo build --release -p overlay-agent -p overlay-cni (make vm-test does it)"
  fi
  old_preflight
  exec {VM_LOCK_FD}>/run/lock/overlay-vm-test.lock
  flock -n "$VM_LOCK_FD" || die "another vm-test is running (lock /run/lock/overlay-vm-test.lock)"
  # A run killed with -9 leaves its guests: remove them (this run dir is vm-test's alone).
  if [ -d "$VM_RUN" ]; then log "removing what an earlier run left in $VM_RUN"; cleanup; fi
}

# What the guests see at /mnt/host (read-only): the provisioning scripts, what `make install`
# reads, and the agent binary.
fill_share() {
  mkdir -p "$VM_SHARE/target/release" "$VM_SHARE/vagrant" "$VM_SHARE/config"
  cp -r "$VM_TOP/Makefile" "$VM_TOP/README.md" "$VM_TOP/packaging" "$VM_SHARE/"
  cp -r "$VM_TOP/vagrant/provision" "$VM_SHARE/vagrant/"
  cp "$VM_TOP/config/agent.example.toml" "$VM_SHARE/config/"
  cp "$AGENT" "$VM_SHARE/target/release/overlay-agent"
  cp "$CNI" "$VM_SHARE/target/release/overlay-cni"
}

start_etcd() {
  mkdir -p "$VM_RUN/etcd"
  etcd --name ovvm --data-dir "$VM_RUN/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://$VM_NET.1:2380" --initial-advertise-peer-urls "http://$VM_NET.1:2380" \
    --initial-cluster "ovvm=http://$VM_NET.1:2380" >"$VM_RUN/etcd.log" 2>&1 {VM_LOCK_FD}>&- &
  echo $! >"$VM_RUN/etcd.pid"
  local deadline=$((SECONDS + 30))
  until ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { tail -20 "$VM_RUN/etcd.log" >&2; die "etcd on $ETCD not healthy after 30 s"; }
    sleep 0.2
  done
}

provision() {  # provision I [SRC]: the Vagrant demo's common.sh and agent.sh, as a node of it would run them
  local i=$1 src=${2:-/mnt/host}
  vm_ssh "$i" "export NODE_NAME=vm$i NODE_IP=$(vm_ip "$i") ETCD_ENDPOINTS=$ETCD OVERLAY_SRC=$src
    bash /mnt/host/vagrant/provision/common.sh && bash /mnt/host/vagrant/provision/agent.sh" \
    >"$VM_RUN/setup-vm$i.log" 2>&1
}

# ---- containers ------------------------------------------------------------------------------

run_container() {  # run_container I NAME: busybox answering http with its name, no network
  vm_ssh "$1" "docker run -d --name $2 --hostname $2 --net=none busybox:stable \
    sh -c 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 80 -h /www' >/dev/null"
}

plug() {  # plug I NAME TENANT [IP]: plugs with --pid; records what plug answers and the container's PID
  local i=$1 c=$2 t=$3 fixed=${4:-} out
  PID[$c]=$(vm_ssh "$i" "docker inspect -f '{{.State.Pid}}' $c")
  out=$(vm_ssh "$i" "overlay-agent plug $c --tenant $t --pid ${PID[$c]} ${fixed:+--ip $fixed}") ||
    die "plug $c into $t on vm$i failed: $out"
  IP[$c]=$(jq -r .ip <<<"$out"); MTU[$c]=$(jq -r .mtu <<<"$out"); MAC[$c]=$(jq -r .mac <<<"$out")
  PORT[$c]=$(jq -r .port <<<"$out")
  printf '  %-10s vm%s  %-5s %-16s mtu %s\n' "$c" "$i" "$t" "${IP[$c]}" "${MTU[$c]}"
}

# ---- checks ----------------------------------------------------------------------------------
PASSED=0
FAILED=0
ok() { echo "ok  $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

# in_ct I NAME CMD...: CMD (a guest tool: iputils ping, iperf3) in container NAME's network namespace
in_ct() { local i=$1 c=$2; shift 2; vm_ssh "$i" "nsenter -t ${PID[$c]} -n $*"; }

# reach I FROM IP: ping from container FROM until IP answers (30 s), prints the rtt
reach() {
  local i=$1 c=$2 ip=$3 deadline=$((SECONDS + 30)) out
  while ((SECONDS < deadline)); do
    if out=$(vm_ssh "$i" "docker exec $c ping -c 2 -W 2 -q $ip" 2>/dev/null); then
      sed -n 's|.*= [^/]*/\([^/]*\)/.*|\1 ms|p' <<<"$out"
      return 0
    fi
    sleep 1
  done
  return 1
}
http_name() { vm_ssh "$1" "docker exec $2 wget -q -O - -T 5 http://$3/" 2>/dev/null || true; }

check_datapath() {
  local i bad="" out
  for i in "${GUESTS[@]}"; do
    out=$(vm_ssh "$i" "ovs-vsctl --bare --columns=name,datapath_type list bridge | paste -sd' '; ovs-dpctl show | head -1")
    grep -q 'system@ovs-system' <<<"$out" && ! grep -q netdev <<<"$out" && grep -q system <<<"$out" ||
      bad+=" vm$i: $(tr '\n' ' ' <<<"$out")"
  done
  if [ -z "$bad" ]; then ok "kernel datapath: every bridge on vm1..3 is datapath_type=system, in system@ovs-system"
  else fail "kernel datapath" "$bad"; fi
}

check_pairs() {  # every container of tenant T reaches every other one, and the right one answers
  local t=$1 tun=$2 i j a b rtt name
  for i in "${GUESTS[@]}"; do for j in "${GUESTS[@]}"; do
    [ "$i" = "$j" ] && continue
    a=$t-vm$i; b=$t-vm$j
    if ! rtt=$(reach "$i" "$a" "${IP[$b]}"); then fail "$t ($tun) $a -> $b" "no ping reply from ${IP[$b]} in 30 s"; continue; fi
    name=$(http_name "$i" "$a" "${IP[$b]}")
    if [ "$name" = "$b" ]; then ok "$t ($tun) $a -> $b (${IP[$b]}): ping $rtt, http answers $name"
    else fail "$t ($tun) $a -> $b" "ping ok but http on ${IP[$b]} answered '$name'"; fi
  done; done
}

check_same_cidr() {  # red-twin and blue-twin hold one address; each tenant reaches its own
  local r b
  r=$(http_name 1 red-vm1 "${IP[red-twin]}"); b=$(http_name 1 blue-vm1 "${IP[blue-twin]}")
  if [ "${IP[red-twin]}" = "${IP[blue-twin]}" ] && [ "$r" = red-twin ] && [ "$b" = blue-twin ]; then
    ok "two tenants, one CIDR: ${IP[red-twin]} answers red-twin (vm2) in red and blue-twin (vm3) in blue"
  else
    fail "two tenants, one CIDR" "${IP[red-twin]} from red-vm1 answered '$r', ${IP[blue-twin]} from blue-vm1 answered '$b'"
  fi
}

check_isolation() {  # FROM-tenant container cannot reach ONLY (of the other tenant); its own tenant can
  local from=$1 own=$2 only=$3
  if ! reach 1 "$own" "${IP[$only]}" >/dev/null; then
    fail "isolation: $from cannot reach $only" "$own (same tenant as $only) cannot reach it either: no proof"
  elif vm_ssh 1 "docker exec $from ping -c 3 -W 1 -q ${IP[$only]}" >/dev/null 2>&1; then
    fail "isolation: $from cannot reach $only" "$from reached ${IP[$only]} across tenants"
  else
    ok "isolation: $from cannot reach $only (${IP[$only]}), $own can"
  fi
}

check_mtu() {  # full-size DF packets and a TCP stream across hosts, from vm1 to vm2
  local t=$1 tun=$2 a=$1-vm1 b=$1-vm2 mtu out mbit
  mtu=${MTU[$a]}
  # netlink, not /sys: nsenter -n keeps the guest's sysfs mount, which shows the guest's eth0
  out=$(in_ct 1 "$a" ip -o link show eth0 | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
  if [ "$out" != "$mtu" ]; then fail "MTU $tun" "container eth0 mtu $out, plug said $mtu"; return; fi
  if ! out=$(in_ct 1 "$a" ping -c 3 -W 2 -M "do" -s $((mtu - 28)) "${IP[$b]}" 2>&1); then
    fail "MTU $tun" "a $mtu-byte packet with DF does not cross: $(tail -2 <<<"$out" | tr '\n' ' ')"; return
  fi
  if in_ct 1 "$a" ping -c 1 -W 2 -M "do" -s $((mtu - 27)) "${IP[$b]}" >/dev/null 2>&1; then
    fail "MTU $tun" "a $((mtu + 1))-byte DF packet left a container whose MTU is $mtu"; return
  fi
  vm_ssh 2 "nsenter -t ${PID[$b]} -n iperf3 -s -1 -D -p 5201
    for _ in \$(seq 100); do nsenter -t ${PID[$b]} -n ss -Hltn 'sport = :5201' | grep -q . && exit 0; sleep 0.1; done; exit 1" ||
    { fail "MTU $tun" "iperf3 server in $b did not listen"; return; }
  if ! out=$(in_ct 1 "$a" iperf3 -c "${IP[$b]}" -t 3 -f m 2>&1); then
    fail "MTU $tun" "TCP stream (iperf3) failed: $(tail -3 <<<"$out" | tr '\n' ' ')"; return
  fi
  mbit=$(awk '/receiver/ {print $(NF-2)}' <<<"$out")
  if [ -n "$mbit" ] && awk -v m="$mbit" 'BEGIN {exit !(m > 1)}'; then
    ok "MTU $tun: container mtu $mtu, $mtu-byte DF ping crosses, $((mtu + 1)) does not leave, TCP stream $a -> $b $mbit Mbit/s"
  else
    fail "MTU $tun" "TCP stream $a -> $b: $(grep -E 'sender|receiver' <<<"$out" | tr '\n' ' ')"
  fi
}

# Continuous pings (across agent restarts, upgrades, attacks), 20 a second. Loss is counted
# from the replies' sequence numbers up to the last one answered, so the echo in flight when ping
# is stopped does not count as lost.
declare -A PING_HOST
ping_start() {  # ping_start NAME I FROM DEST_IP: from container FROM on guest I
  PING_HOST[$1]=$2
  vm_ssh "$2" "rm -f /tmp/ping-$1.*; setsid nsenter -t ${PID[$3]} -n ping -i 0.05 -W 1 $4 </dev/null >/tmp/ping-$1.log 2>&1 &
    echo \$! >/tmp/ping-$1.pid"
}
ping_replies() { vm_ssh "${PING_HOST[$1]}" "grep -c 'icmp_seq=' /tmp/ping-$1.log || true"; }
wait_replies() {  # wait_replies NAME N SECONDS: until the ping has at least N replies
  local deadline=$((SECONDS + $3))
  until (($(ping_replies "$1") >= $2)); do ((SECONDS < deadline)) || return 1; sleep 0.5; done
}
ping_stop() {  # prints "sent-up-to-last-reply lost longest-run-of-lost"
  vm_ssh "${PING_HOST[$1]}" "kill -INT \$(cat /tmp/ping-$1.pid); for _ in \$(seq 50); do kill -0 \$(cat /tmp/ping-$1.pid) 2>/dev/null || break; sleep 0.1; done
    grep -o 'icmp_seq=[0-9]*' /tmp/ping-$1.log | cut -d= -f2 | sort -n | uniq |
      awk 'NR == 1 {first = \$1; prev = \$1} {if (\$1 - prev - 1 > gap) gap = \$1 - prev - 1; prev = \$1; n++}
        END {if (!n) print 0, 0, 0; else print prev - first + 1, prev - first + 1 - n, gap + 0}'"
}

agent_pid() { vm_ssh "$1" "systemctl show -p MainPID --value overlay-agent"; }
# The agent answers, reaches OVSDB and holds its registration (a refused one still answers).
agent_registered() { vm_ssh "$1" "overlay-agent status --json 2>/dev/null | jq -e '.host.registered and .host.ovsdb_connected' >/dev/null"; }
wait_registered() {  # wait_registered I SECONDS
  local deadline=$((SECONDS + $2))
  until agent_registered "$1"; do ((SECONDS < deadline)) || return 1; sleep 0.5; done
}

# Every agent restarted in turn under traffic: no echo lost, every flow on both bridges of every
# guest the same after as before (the restarted agent finds its flows in place and changes none).
check_restart() {
  local i before after r b restarted="" flows0=() changed="" n=0
  for i in "${GUESTS[@]}"; do flows0[i]=$(flows_of "$i"); done
  ping_start red 1 red-vm1 "${IP[red-vm2]}"
  ping_start blue 1 blue-vm1 "${IP[blue-vm3]}"
  if ! wait_replies red 20 30 || ! wait_replies blue 20 30; then
    ping_stop red >/dev/null; ping_stop blue >/dev/null
    fail "restart under traffic" "the pings did not start answering (red $(ping_replies red), blue $(ping_replies blue) replies)"; return
  fi
  for i in 2 3 1; do
    before=$(agent_pid "$i")
    vm_ssh "$i" "systemctl restart overlay-agent"
    wait_registered "$i" 120 || true
    after=$(agent_pid "$i")
    if [ "$before" != "$after" ] && [ "$after" != 0 ] && agent_registered "$i"; then
      restarted+=" vm$i"
    fi
  done
  # Traffic after the last restart too (the agent reconciles right after it answers).
  r=$(ping_replies red); b=$(ping_replies blue)
  wait_replies red $((r + 60)) 60 || true
  wait_replies blue $((b + 60)) 60 || true
  r=$(ping_stop red); b=$(ping_stop blue)
  for i in "${GUESTS[@]}"; do
    after=$(flows_of "$i"); n=$((n + $(wc -l <<<"$after")))
    [ "$after" = "${flows0[i]}" ] ||
      changed+=" vm$i: $(diff <(echo "${flows0[i]}") <(echo "$after") | grep '^[<>]' | head -4 | tr '\n' ' ');"
  done
  if [ "$restarted" != " vm2 vm3 vm1" ]; then
    fail "restart under traffic" "agents restarted and registered again:${restarted:- none} (of vm2 vm3 vm1)"; return
  fi
  local t line sent lost
  for t in red blue; do
    [ "$t" = red ] && line=$r || line=$b
    read -r sent lost _ <<<"$line"
    if [ "$sent" -ge 100 ] && [ "$lost" = 0 ]; then
      ok "restart under traffic ($t, $( [ "$t" = red ] && echo vxlan || echo gre)): agents on vm2, vm3, vm1 restarted, $sent echoes, 0 lost"
    else
      fail "restart under traffic ($t)" "$lost of $sent echoes lost across the agent restarts"
    fi
  done
  if [ -z "$changed" ]; then
    ok "restart changes no flow: br-tun and br-int on vm1..3 hold the same $n flows (by cookie, match and actions) after the restarts as before"
  else
    fail "restart changes no flow" "$changed"
  fi
}

snapshot() {  # what a plug adds on guest I: OVS ports and interfaces, links
  vm_ssh "$1" "for b in \$(ovs-vsctl list-br); do ovs-vsctl list-ports \$b; done | sort
    ovs-vsctl --bare --columns=name list interface | sed '/^\$/d' | sort
    ip -o link | awk -F': ' '{print \$2}' | sed 's/@.*//' | sort"
}

# The links in container C (lo, and the fallback devices gre0, gretap0, ... that ip_gre puts in
# every namespace).
ct_links() { vm_ssh "$1" "docker exec $2 ip -o link | awk -F': ' '{print \$2}' | sed 's/@.*//' | sort | paste -sd' '"; }

# Two fresh containers on vm3, plugged and unplugged: every trace must be gone, on vm3 and in
# the flows of every guest (the others' unicast and ARP flows for them).
check_unplug() {
  local before after c t i leftovers="" keys flows0=() deadline
  run_container 3 probe-red; run_container 3 probe-blue
  before=$(snapshot 3)
  for i in "${GUESTS[@]}"; do flows0[i]=$(flows_of "$i"); done
  declare -A ct_links
  for c in probe-red probe-blue; do ct_links[$c]=$(ct_links 3 "$c"); done
  plug 3 probe-red red >/dev/null; plug 3 probe-blue blue >/dev/null
  reach 3 probe-red "${IP[red-vm1]}" >/dev/null || leftovers+=" probe-red could not reach red-vm1 (the plug did not work);"
  reach 3 probe-blue "${IP[blue-vm1]}" >/dev/null || leftovers+=" probe-blue could not reach blue-vm1 (the plug did not work);"
  [ "$(snapshot 3)" != "$before" ] || leftovers+=" the plugs changed no port or link;"
  for i in "${GUESTS[@]}"; do
    [ "$(flows_of "$i")" != "${flows0[i]}" ] || leftovers+=" the plugs changed no flow on vm$i;"
  done
  for c in probe-red probe-blue; do
    vm_ssh 3 "overlay-agent unplug $c" >/dev/null || leftovers+=" unplug $c failed;"
  done
  after=$(snapshot 3)
  [ "$after" = "$before" ] || leftovers+=" ports/links: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ');"
  # The other guests learn of the unplug from etcd: their flows follow within moments.
  for i in "${GUESTS[@]}"; do
    deadline=$((SECONDS + 30))
    until [ "$(flows_of "$i")" = "${flows0[i]}" ] || ((SECONDS >= deadline)); do sleep 0.5; done
    after=$(flows_of "$i")
    [ "$after" = "${flows0[i]}" ] ||
      leftovers+=" flows on vm$i 30 s after: $(diff <(echo "${flows0[i]}") <(echo "$after") | grep '^[<>]' | head -4 | tr '\n' ' ');"
  done
  keys=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix /overlay | grep -E "probe-(red|blue)|/ips/red/${IP[probe-red]}\$|/ips/blue/${IP[probe-blue]}\$" || true)
  [ -z "$keys" ] || leftovers+=" etcd: $(tr '\n' ' ' <<<"$keys");"
  for c in probe-red probe-blue; do
    t=$(ct_links 3 "$c")
    [ "$t" = "${ct_links[$c]}" ] || leftovers+=" $c has links '$t', had '${ct_links[$c]}' before the plug;"
    vm_ssh 3 "docker rm -f $c >/dev/null"
  done
  if [ -z "$leftovers" ]; then ok "unplug leaves nothing (red and blue on vm3): no port, no interface, no veth, no etcd record, no flow on vm1..3"
  else fail "unplug leaves nothing" "$leftovers"; fi
}

# ---- main ------------------------------------------------------------------------------------

STARTED=""
SUMMARY=""
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${OVERLAY_VM_KEEP:-}" ] && [ -d "$VM_RUN" ]; then keep; else cleanup "$rc"; fi
  if [ -n "$STARTED" ] && [ -z "$SUMMARY" ]; then
    echo "FAIL vm-test: stopped before its checks ended (exit status $rc; logs: $LOGS)"
    echo "$PASSED passed, $((FAILED + 1)) failed"
  fi
  exit "$rc"
}

# OVERLAY_VM_KEEP=1: what the checks need to run again from another invocation.
keep() {
  declare -p IP MTU MAC PORT PID >"$VM_RUN/state.sh"
  log "guests kept (OVERLAY_VM_KEEP): vm/vm-test.sh check NAME... runs checks again, vm/vm-test.sh down removes them"
}

# vm/vm-test.sh check NAME...: check functions against the guests a kept run left.
rerun() {
  [ "$(id -u)" = 0 ] || die "vm-test needs root"
  [ -f "$VM_RUN/state.sh" ] || die "no kept run in $VM_RUN: OVERLAY_VM_KEEP=1 vm/vm-test.sh first"
  # shellcheck disable=SC1091  # written by keep()
  . "$VM_RUN/state.sh"
  vm_image >/dev/null 2>&1
  local f
  for f in "$@"; do
    if [[ $f != check_* ]] || ! declare -F "$f" >/dev/null; then die "no check function $f"; fi
    "$f"
  done
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

main() {
  local t0=$SECONDS t i pids=() bad=""
  preflight
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  STARTED=1
  log "accelerator: $(vm_accel_why)"
  vm_deps
  t=$SECONDS; vm_image; local t_image=$((SECONDS - t))

  mkdir -p "$VM_RUN"
  fill_share
  fill_old_share
  vm_net_up
  outside_up
  start_etcd
  t=$SECONDS
  for i in "${GUESTS[@]}"; do vm_boot "$i"; done
  log "guests vm1..3 booting ($VM_MEM MiB, 1 vCPU each, $(vm_accel)), $VM_NET.11-13"
  for i in "${GUESTS[@]}"; do vm_wait_ssh "$i" "$BOOT_TIMEOUT"; done
  local t_boot=$((SECONDS - t))
  log "ssh up on vm1..3 after $t_boot s"

  # vm1 and vm2 on the old release, vm3 on this one (vm/upgrade.sh): check_upgrade moves them on.
  t=$SECONDS
  for i in "${GUESTS[@]}"; do
    case $i in
      1 | 2) provision "$i" /mnt/host/old & ;;
      *) provision "$i" & ;;
    esac
    pids+=($!)
  done
  for i in "${GUESTS[@]}"; do
    wait "${pids[$((i - 1))]}" || { bad+=" vm$i"; tail -15 "$VM_RUN/setup-vm$i.log" >&2; }
  done
  [ -z "$bad" ] || die "provisioning (vagrant/provision/common.sh, agent.sh) failed on$bad"
  local t_setup=$((SECONDS - t))
  log "agents up on vm1..3 after $t_setup s (vm1, vm2: the old release $(cat "$OLD_DIR/commit"); vm3: this checkout)"
  for i in "${GUESTS[@]}"; do outside_route "$i"; done

  t=$SECONDS
  vm_ssh 1 "overlay-agent tenant create red --vni ${VNI[red]} --cidr 198.19.0.0/16 --tunnel vxlan &&
    overlay-agent tenant create blue --vni ${VNI[blue]} --cidr 198.19.0.0/16 --tunnel gre" >&2
  echo "containers of the upgrade (vm1, vm2 plugged by the old agent, vm3 by the new one):"
  check_upgrade
  local t_upgrade=$((SECONDS - t))

  t=$SECONDS
  echo "containers (docker --net=none, plugged with overlay-agent plug --pid):"
  for i in "${GUESTS[@]}"; do run_container "$i" "red-vm$i"; run_container "$i" "blue-vm$i"; done
  run_container 2 red-twin; run_container 3 blue-twin; run_container 3 blue-only; run_container 2 red-only
  for i in "${GUESTS[@]}"; do plug "$i" "red-vm$i" red; plug "$i" "blue-vm$i" blue; done
  plug 2 red-twin red 198.19.250.250; plug 3 blue-twin blue 198.19.250.250
  plug 3 blue-only blue 198.19.250.251; plug 2 red-only red 198.19.250.252

  check_datapath
  check_tunnel_ports
  check_pairs red vxlan
  check_pairs blue gre
  check_same_cidr
  check_isolation red-vm1 blue-vm1 blue-only
  check_isolation blue-vm1 red-vm1 red-only
  check_gateway
  check_l2pop
  check_datapath_flows
  check_antispoof
  check_mtu red vxlan
  check_mtu blue gre
  check_restart
  check_unplug
  check_adopted
  local t_checks=$((SECONDS - t))

  echo "--- vm1: kernel modules (lsmod | grep -E 'openvswitch|vxlan|gre')"
  vm_ssh 1 "lsmod | grep -E 'openvswitch|vxlan|gre'"
  echo "--- vm1: ovs-dpctl show"
  vm_ssh 1 "ovs-dpctl show"
  echo "--- vm1: ovs-dpctl dump-flows (while red-vm1 pinged red-vm2 and blue-vm1 pinged blue-vm3)"
  echo "$DP_FLOWS"
  echo "--- timings ($(vm_accel)): image $t_image s, boot to ssh $t_boot s, provisioning $t_setup s, upgrade $t_upgrade s, containers and checks $t_checks s, total $((SECONDS - t0)) s"
  trap - EXIT INT TERM
  if [ -n "${OVERLAY_VM_KEEP:-}" ]; then keep; else cleanup "$FAILED"; fi
  SUMMARY=1
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}

case ${1:-} in
  check) shift; rerun "$@" ;;
  down) [ "$(id -u)" = 0 ] || die "vm-test needs root"; cleanup ;;
  "") main ;;
  *) die "usage: vm/vm-test.sh [check NAME... | down]" ;;
esac
