# shellcheck shell=bash
# The gateway on the kernel datapath, sourced by vm/vm-test.sh (which defines vm_ssh, vm_ip, ok,
# fail, GUESTS, IP, PID and VM_RUN): an "outside" network, 198.18.100.0/24, that exists only
# inside the guests' network. A namespace on the host, ovvm-out, sits on the guests' bridge as
# 198.18.200.254 and holds 198.18.100.1, where an http server logs who asks; the guests route
# 198.18.100.0/24 to it, as a site's router would. Containers reach it through their own host's
# router namespace, and the server must see that host's underlay address.

OUT_NS=ovvm-out
OUT_IP=198.18.100.1

outside_up() {
  local router=$VM_NET.254
  ip netns add "$OUT_NS"
  ip link add ovvm-o0 type veth peer name eth0 netns "$OUT_NS"
  ip link set ovvm-o0 master "$VM_BRIDGE" up
  ip -n "$OUT_NS" link set lo up
  ip -n "$OUT_NS" addr add "$router/24" dev eth0
  ip -n "$OUT_NS" link set eth0 up
  # (this host's kernel may have no dummy module: the outside address sits on lo)
  ip -n "$OUT_NS" addr add "$OUT_IP/32" dev lo
  mkdir -p "$VM_RUN/outside"
  echo outside >"$VM_RUN/outside/index.html"
  # Each request's line (client address first) goes to outside.log; nothing else listens there.
  (cd "$VM_RUN/outside" && exec ip netns exec "$OUT_NS" /usr/bin/python3 -u -m http.server 80 --bind "$OUT_IP" \
    </dev/null >"$VM_RUN/outside.log" 2>&1 {VM_LOCK_FD}>&-) &
  echo $! >"$VM_RUN/outside.pid"
  local deadline=$((SECONDS + 30))
  until ip netns exec "$OUT_NS" ss -Hltn "sport = :80" | grep -q .; do
    ((SECONDS < deadline)) || { cat "$VM_RUN/outside.log" >&2; die "the outside http server on $OUT_IP did not listen"; }
    sleep 0.2
  done
}

outside_route() {  # outside_route I: guest I routes the outside network to ovvm-out
  vm_ssh "$1" "ip route replace 198.18.100.0/24 via $VM_NET.254"
}

outside_down() {  # safe to call any time
  local pid
  if pid=$(cat "$VM_RUN/outside.pid" 2>/dev/null) && [ -d "/proc/$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  if ip netns pids "$OUT_NS" >/dev/null 2>&1; then
    for pid in $(ip netns pids "$OUT_NS"); do kill "$pid" 2>/dev/null || true; done
    ip netns del "$OUT_NS" 2>/dev/null || true
  fi
  if ip link show ovvm-o0 >/dev/null 2>&1; then ip link del ovvm-o0 2>/dev/null || true; fi
}

# Every red and blue container (two tenants on one CIDR, vxlan and gre) fetches from the outside
# server a path naming it: the body must come back, and the server must log the request from the
# underlay address of the container's own host.
check_gateway() {
  local i t c body seen bad="" summary=""
  for i in "${GUESTS[@]}"; do
    for t in red blue; do
      c=$t-vm$i
      body=$(vm_ssh "$i" "docker exec $c wget -q -O - -T 10 http://$OUT_IP/index.html?from=$c" 2>&1) ||
        { bad+=" $c got no answer from $OUT_IP: $(tr '\n' ' ' <<<"$body");"; continue; }
      [ "$body" = outside ] || { bad+=" $c got '$body' from $OUT_IP;"; continue; }
      seen=$(grep -F "from=$c " "$VM_RUN/outside.log" | tail -1 | awk '{print $1}')
      if [ "$seen" = "$(vm_ip "$i")" ]; then summary+=" $c as $seen,"
      else bad+=" $c was seen from '$seen', not its host vm$i's $(vm_ip "$i");"; fi
    done
  done
  if [ -z "$bad" ]; then
    ok "gateway: every red and blue container reaches the outside $OUT_IP through its host's router, seen there as its host:${summary%,}"
  else
    fail "gateway" "$bad"
  fi
}
