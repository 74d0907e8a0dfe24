# shellcheck shell=bash
# The flow pipeline's checks on the kernel datapath, sourced by vm/vm-test.sh (which defines
# vm_ssh, in_ct, reach, http_name, the ping_* helpers, ok, fail, and the GUESTS, IP, MAC, PORT, PID
# and VNI arrays):
# one tunnel port per tenant on every br-tun, l2 population counted on the underlay, ARP for a
# remote container answered on the sender's host, spoofed addresses and MACs changing nothing
# for the others, and the datapath flows that carry it all.

TUNNELLED="udp port 4789 or ip proto 47"
# shellcheck disable=SC2034  # printed by vm-test.sh
DP_FLOWS=""  # vm1's datapath flows, as check_datapath_flows dumped them

# ---- tcpdump in a guest ------------------------------------------------------------------------

cap_start() {  # cap_start I NAME IFACE FILTER [CONTAINER]: until tcpdump listens (in CONTAINER's netns)
  local i=$1 n=$2 ifc=$3 filter=$4 ns=""
  [ -z "${5:-}" ] || ns="nsenter -t ${PID[$5]} -n"
  vm_ssh "$i" "rm -f /tmp/cap-$n.*; setsid $ns tcpdump -i $ifc -n -l -e --immediate-mode '$filter' \
      </dev/null >/tmp/cap-$n.out 2>/tmp/cap-$n.err & echo \$! >/tmp/cap-$n.pid
    for _ in \$(seq 100); do grep -q 'listening on' /tmp/cap-$n.err && exit 0; sleep 0.1; done
    cat /tmp/cap-$n.err >&2; exit 1"
}

cap_stop() {  # cap_stop I NAME: prints the packets seen, one line each
  vm_ssh "$1" "p=\$(cat /tmp/cap-$2.pid); kill -INT \$p
    for _ in \$(seq 50); do kill -0 \$p 2>/dev/null || break; sleep 0.1; done
    grep -v '^\$' /tmp/cap-$2.out || true"
}

neigh_mac() {  # neigh_mac I CONTAINER IP: the MAC CONTAINER's neighbour table has for IP
  in_ct "$1" "$2" ip neigh show "$3" | sed -n 's/.* lladdr \([0-9a-f:]*\).*/\1/p'
}

count() { grep -c -- "$1" <<<"$2" || true; }

# ---- checks ----------------------------------------------------------------------------------

check_tunnel_ports() {  # one flow-based port per tenant on each br-tun, both bridges fail secure
  local i want got bad=""
  for i in "${GUESTS[@]}"; do
    want=$(printf '%s\n' "patch-int,patch,peer=patch-tun" \
      "tun-gr-${VNI[blue]},gre,key=${VNI[blue]} local_ip=$(vm_ip "$i") remote_ip=flow" \
      "tun-vx-${VNI[red]},vxlan,key=${VNI[red]} local_ip=$(vm_ip "$i") remote_ip=flow" \
      "fail_mode secure secure")
    # shellcheck disable=SC2016  # expanded in the guest
    got=$(vm_ssh "$i" 'for p in $(ovs-vsctl list-ports br-tun); do
        ovs-vsctl --format=csv --data=bare --no-headings --columns=name,type,options find interface name="$p"
      done | sort
      echo "fail_mode $(ovs-vsctl get bridge br-tun fail_mode) $(ovs-vsctl get bridge br-int fail_mode)"')
    [ "$got" = "$want" ] || bad+=" vm$i has: $(tr '\n' ';' <<<"$got")"
  done
  if [ -z "$bad" ]; then
    ok "tunnel ports: br-tun on vm1..3 holds patch-int, tun-vx-${VNI[red]} (vxlan, key=${VNI[red]}, remote_ip=flow) and tun-gr-${VNI[blue]} (gre, key=${VNI[blue]}, remote_ip=flow), nothing else; br-tun and br-int fail_mode=secure"
  else
    fail "tunnel ports" "want exactly patch-int, tun-vx-${VNI[red]}, tun-gr-${VNI[blue]} (remote_ip=flow) and fail_mode secure:$bad"
  fi
}

# A pair on vm1 and vm2 in each tenant pings with empty neighbour tables: vm2's underlay
# carries it (the capture works), vm3's sees none of it (unicast goes to the owning host only,
# and the ARP requests never leave vm1: its br-tun answers them, so the target never sees them).
check_l2pop() {
  local t peer third out bad="" ctl=""
  for t in red blue; do
    in_ct 1 "$t-vm1" ip neigh flush all; in_ct 2 "$t-vm2" ip neigh flush all
    cap_start 2 "target-$t" eth0 "arp or icmp" "$t-vm2" || { fail "l2 population" "tcpdump in $t-vm2 did not start"; return; }
  done
  cap_start 3 third eth0 "$TUNNELLED" || { fail "l2 population" "tcpdump on vm3 did not start"; return; }
  cap_start 2 peer eth0 "$TUNNELLED" || { fail "l2 population" "tcpdump on vm2 did not start"; return; }
  out=$(vm_ssh 1 "nsenter -t ${PID[red-vm1]} -n ping -c 20 -i 0.05 -W 2 -q ${IP[red-vm2]} >/tmp/l2pop-red.log 2>&1 &
    nsenter -t ${PID[blue-vm1]} -n ping -c 20 -i 0.05 -W 2 -q ${IP[blue-vm2]} >/tmp/l2pop-blue.log 2>&1 & wait
    grep -h 'packets transmitted' /tmp/l2pop-red.log /tmp/l2pop-blue.log")
  third=$(cap_stop 3 third); peer=$(cap_stop 2 peer)
  [ "$(count ' 0% packet loss' "$out")" = 2 ] || bad+=" the pings lost echoes: $(tr '\n' ' ' <<<"$out");"
  (($(count VXLAN "$peer") >= 40)) || bad+=" vm2's underlay saw $(count VXLAN "$peer") VXLAN packets (want >= 40: the capture does not work);"
  (($(count GRE "$peer") >= 40)) || bad+=" vm2's underlay saw $(count GRE "$peer") GRE packets (want >= 40);"
  [ -z "$third" ] || bad+=" vm3's underlay saw $(wc -l <<<"$third") tunnelled packets: $(head -3 <<<"$third" | tr '\n' ' ');"
  for t in red blue; do
    out=$(cap_stop 2 "target-$t")
    (($(count 'ICMP echo request' "$out") >= 20)) || bad+=" $t-vm2 saw $(count 'ICMP echo request' "$out") echo requests (want >= 20);"
    ! grep -q "who-has ${IP[$t-vm2]} tell ${IP[$t-vm1]}" <<<"$out" ||
      bad+=" $t-vm2 saw $t-vm1's ARP request: $(grep -m1 who-has <<<"$out");"
    [ "$(neigh_mac 1 "$t-vm1" "${IP[$t-vm2]}")" = "${MAC[$t-vm2]}" ] ||
      bad+=" $t-vm1 resolved ${IP[$t-vm2]} to '$(neigh_mac 1 "$t-vm1" "${IP[$t-vm2]}")', not ${MAC[$t-vm2]};"
    ctl+=" $t $(count 'ICMP echo request' "$out") echo requests;"
  done
  if [ -z "$bad" ]; then
    ok "l2 population: red-vm1 -> red-vm2 (vxlan) and blue-vm1 -> blue-vm2 (gre), 20 echoes each: vm2's underlay $(count VXLAN "$peer") VXLAN + $(count GRE "$peer") GRE packets, vm3's 0"
    ok "ARP answered on the sender's host: red-vm1 and blue-vm1 resolved their peers to the right MACs, the peers saw no who-has from them (and saw the echoes:${ctl%;})"
  else
    fail "l2 population and local ARP" "$bad"
  fi
}

# The kernel datapath carries the pipeline: while vm1's containers send, its datapath holds
# flows that set the tunnel (VNI and destination host) and flows that match tunnel metadata.
check_datapath_flows() {
  local dump red_out blue_out red_in
  dump=$(vm_ssh 1 "nsenter -t ${PID[red-vm1]} -n ping -c 5 -i 0.1 -q ${IP[red-vm2]} >/dev/null &
    nsenter -t ${PID[blue-vm1]} -n ping -c 5 -i 0.1 -q ${IP[blue-vm3]} >/dev/null; wait; ovs-dpctl dump-flows")
  red_out=$(grep -o "set(tunnel(tun_id=$(printf '0x%x' "${VNI[red]}"),src=$(vm_ip 1),dst=$(vm_ip 2)[^)]*)))" <<<"$dump" | head -1)
  blue_out=$(grep -o "set(tunnel(tun_id=$(printf '0x%x' "${VNI[blue]}"),src=$(vm_ip 1),dst=$(vm_ip 3)[^)]*)))" <<<"$dump" | head -1)
  red_in=$(grep -o "tunnel(tun_id=$(printf '0x%x' "${VNI[red]}"),src=$(vm_ip 2),dst=$(vm_ip 1)[^)]*))" <<<"$dump" | head -1)
  # shellcheck disable=SC2034  # printed by vm-test.sh
  DP_FLOWS=$dump
  echo "  vm1 ovs-dpctl dump-flows: $(grep -c . <<<"$dump") flows, $(count 'set(tunnel(' "$dump") set a tunnel, $(count 'recirc_id(0),tunnel(' "$dump") match one, $(count 'slow_path' "$dump") in ovs-vswitchd's slow path ($(grep 'slow_path' <<<"$dump" | grep -c 'eth_type(0x0806)') of them ARP)"
  if [ -n "$red_out" ] && [ -n "$blue_out" ] && [ -n "$red_in" ]; then
    ok "datapath flows on vm1: $red_out, $blue_out; from vm2 $red_in"
  else
    fail "datapath flows on vm1" "want set(tunnel(tun_id=VNI,dst=vm2/vm3)) actions and a tunnel(tun_id,src=vm2) match; ovs-dpctl dump-flows: $(tr '\n' ' ' <<<"$dump")"
  fi
}

# red-only (vm2) takes red-vm3's address and announces it (gratuitous ARP requests and replies,
# which would rewrite the existing neighbour entries of red-vm2 on the same host and of red-vm1
# on vm1), then takes red-vm3's MAC and sends from it (which would move that MAC to its port in
# vm2's br-int). Nobody believes it: both keep red-vm3's MAC for its address and get red-vm3's
# http there (not the attacker's own server) while the attacker holds the address, vm2's br-int
# keeps red-vm3's MAC off the attacker's port, red-vm2's echoes to red-vm3 never stop, and the
# attacker's port dropped what it spoofed.
check_antispoof() {
  local att=red-only vic=red-vm3 o v vmac amac ofport d0 d1 bad="" line sent lost seen leaked=0 control
  v=${IP[$vic]}; vmac=${MAC[$vic]}; amac=${MAC[$att]}
  for o in red-vm2:2 red-vm1:1; do
    reach "${o#*:}" "${o%:*}" "$v" >/dev/null || { fail "anti-spoofing" "${o%:*} cannot reach $vic before the attack"; return; }
  done
  ofport=$(vm_ssh 2 "ovs-vsctl get interface ${PORT[$att]} ofport")
  d0=$(port_drops 2 "$ofport")
  ping_start spoof 2 red-vm2 "$v"
  wait_replies spoof 10 30 || bad+=" red-vm2's echoes to $vic did not start;"
  # What reaches red-vm1 (another host) from the attacker while it spoofs is recorded: none of it
  # may carry the stolen address or MAC (the checks' own traffic is outside these windows).
  cap_start 1 spoofed eth0 "(arp or icmp) and not ether src ${MAC[red-vm1]}" red-vm1 ||
    { ping_stop spoof >/dev/null; fail "anti-spoofing" "tcpdump in red-vm1 did not start"; return; }
  # 1. The victim's address.
  in_ct 2 "$att" "sh -c 'ip addr add $v/16 dev eth0 && busybox arping -U -c 3 -w 2 -I eth0 -s $v $v
    busybox arping -A -c 3 -w 2 -I eth0 -s $v $v; ping -c 3 -i 0.2 -w 2 -I $v ${IP[red-vm2]}
    ping -c 3 -i 0.2 -w 2 -I $v ${IP[red-vm1]}'" >/dev/null 2>&1 || true
  seen=$(cap_stop 1 spoofed)
  for o in red-vm2:2 red-vm1:1; do
    line=$(neigh_mac "${o#*:}" "${o%:*}" "$v")
    [ "$line" = "$vmac" ] || bad+=" ${o%:*} has $v at '$line', not $vic's $vmac;"
    line=$(http_name "${o#*:}" "${o%:*}" "$v")
    [ "$line" = "$vic" ] || bad+=" http to $v from ${o%:*} answered '$line' while $att held the address;"
  done
  in_ct 2 "$att" ip addr del "$v/16" dev eth0
  # 2. The victim's MAC, with the attacker's own address; then its own MAC back, and three
  # echoes to red-vm1 that must arrive (the capture's positive control).
  cap_start 1 spoofed eth0 "(arp or icmp) and not ether src ${MAC[red-vm1]}" red-vm1 ||
    { ping_stop spoof >/dev/null; fail "anti-spoofing" "tcpdump in red-vm1 did not start"; return; }
  in_ct 2 "$att" "sh -c 'ip link set eth0 address $vmac && ping -c 30 -i 0.05 -w 3 ${IP[red-vm2]}
    busybox arping -U -c 3 -w 2 -I eth0 -s ${IP[$att]} ${IP[$att]}; ping -c 10 -i 0.05 -w 2 ${IP[red-vm1]}'" >/dev/null 2>&1 || true
  line=$(vm_ssh 2 "ovs-appctl fdb/show br-int" | awk -v m="$vmac" '$3 == m {print $1}' | paste -sd' ')
  [[ " $line " != *" $ofport "* ]] || bad+=" vm2's br-int learnt $vmac on the attacker's port $ofport;"
  in_ct 2 "$att" ip link set eth0 address "$amac"
  in_ct 2 "$att" ping -c 3 -i 0.2 -W 2 "${IP[red-vm1]}" >/dev/null 2>&1 || true
  seen+=$'\n'$(cap_stop 1 spoofed)
  control=$(grep -cF "$amac > ${MAC[red-vm1]}, ethertype IPv4 (0x0800), length 98: ${IP[$att]} > ${IP[red-vm1]}: ICMP echo request" <<<"$seen" || true)
  ((control >= 1)) || bad+=" red-vm1 saw none of $att's echoes with its own MAC back (the capture does not work);"
  # Spoofed: from the stolen address, an ARP claim of it, or the attacker's address from the stolen MAC.
  leaked=$(grep -F -e ": $v > " -e " tell $v," -e " $v is-at $amac" <<<"$seen"; grep -E "^[^ ]+ $vmac > .*${IP[$att]//./\\.}[ ,]" <<<"$seen") || true
  [ -z "$leaked" ] || bad+=" red-vm1 received spoofed frames: $(head -3 <<<"$leaked" | tr '\n' ' ');"
  wait_replies spoof $(($(ping_replies spoof) + 20)) 30 || true
  read -r sent lost _ <<<"$(ping_stop spoof)"
  [ "$sent" -ge 20 ] && [ "$lost" = 0 ] || bad+=" red-vm2 -> $vic lost $lost of $sent echoes during the attack;"
  d1=$(port_drops 2 "$ofport")
  ((d1 >= d0 + 10)) || bad+=" the attacker's port (ofport $ofport) dropped $((d1 - d0)) packets (want >= 10);"
  # Its own MAC back, the attacker talks again: only the spoofed frames were dropped.
  reach 2 "$att" "${IP[red-vm2]}" >/dev/null || bad+=" with its own MAC back, $att cannot reach red-vm2;"
  if [ -z "$bad" ]; then
    ok "anti-spoofing: $att (vm2) announced $vic's address $v and sent from $vic's MAC: red-vm2 (same host) and red-vm1 (vm1) still resolve $v to $vmac and get $vic's http there, vm2's br-int keeps $vmac off the attacker's port, $sent echoes red-vm2 -> $vic 0 lost, $((d1 - d0)) spoofed packets dropped at its port, none of them seen on red-vm1 (which saw $control of its echoes once its MAC was back)"
  else
    fail "anti-spoofing" "$bad"
  fi
}

port_drops() {  # port_drops I OFPORT: packets the drop flow of container port OFPORT on br-int counted
  vm_ssh "$1" "ovs-ofctl -O OpenFlow13 dump-flows br-int" |
    sed -n "s/.*n_packets=\([0-9]*\),.*priority=90,in_port=$2 .*/\1/p" | head -1
}

flows_of() {  # flows_of I: both bridges' flows on guest I, without counters
  vm_ssh "$1" "for b in br-tun br-int; do ovs-ofctl -O OpenFlow13 --no-stats dump-flows \$b | sed \"s/^/\$b /\"; done | sort"
}
