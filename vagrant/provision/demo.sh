#!/usr/bin/env bash
# The demo, on every node after agent.sh:
#   demo.sh up      node1 creates the tenants: red (VXLAN) and blue (GRE), both 198.19.0.0/16;
#                   every node starts red-<node> and blue-<node> (docker --net=none, busybox
#                   answering http with its own name) and plugs them with `overlay-agent plug`;
#                   then `check`.
#   demo.sh check   from this node's containers, ping every other node's container of the same
#                   tenant and ask it over http who it is (red and blue share addresses, so the
#                   answer shows which tenant was reached); check that red cannot reach blue-only,
#                   a blue container on an address no red container has.
#   demo.sh down    unplug and remove this node's containers (the tenants stay).
# From the host:  vagrant ssh node2 -c 'sudo /vagrant/vagrant/provision/demo.sh check'
# Idempotent: `up` again keeps running containers, restarts stopped ones and plugs them again.
#
# Env (the Vagrantfile sets them; all optional when run by hand):
#   DEMO_CREATE_TENANTS=1   this node creates the tenants (node1)
#   DEMO_BLUE_ONLY=1        this node runs the blue-only container (node1)
#   DEMO_WAIT_FOR=HOSTS     before the check, wait until these hosts have plugged their containers
#   DEMO_WAIT_SECONDS       how long to wait for tenants and other hosts (default 1200)
#   DEMO_IMAGE              container image (default busybox:stable: sh, httpd, wget, ping)
#   ETCD_ENDPOINTS          default: [etcd] endpoints of /etc/overlay-agent/agent.toml
set -euo pipefail

CONF=${OVERLAY_AGENT_CONF:-/etc/overlay-agent/agent.toml}
IMAGE=${DEMO_IMAGE:-busybox:stable}
WAIT_SECONDS=${DEMO_WAIT_SECONDS:-1200}
CIDR=198.19.0.0/16
TENANTS=(red blue)
declare -A VNI=([red]=100 [blue]=200)
declare -A TUNNEL=([red]=vxlan [blue]=gre)
BLUE_ONLY=blue-only
BLUE_ONLY_IP=198.19.250.250

log() { printf '== demo: %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

conf_value() {  # conf_value KEY: the value of `KEY = ...` in the agent's config, quotes dropped
  sed -n "s/^$1 = //p" "$CONF" | head -n 1 | tr -d '"[] '
}
ETCD_ENDPOINTS=${ETCD_ENDPOINTS:-$(conf_value endpoints)}
PREFIX=$(conf_value prefix)
PREFIX=${PREFIX:-/overlay}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...: 0 once COMMAND succeeds, 1 on timeout
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after $secs s waiting for $what" >&2
      return 1
    fi
    sleep 2
  done
}

tenant_exists() {
  overlay-agent tenant list --json | jq -e --arg n "$1" 'any(.[]; .name == $n)' >/dev/null
}

create_tenant() {  # create_tenant NAME
  local t=$1 out
  if tenant_exists "$t"; then
    log "tenant $t exists"
    return
  fi
  if ! out=$(overlay-agent tenant create "$t" --vni "${VNI[$t]}" --cidr "$CIDR" --tunnel "${TUNNEL[$t]}" 2>&1); then
    grep -q "already exists" <<<"$out" || die "$out"
  fi
  log "$out"
}

container_running() {  # container_running NAME: prints true, false or missing
  docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null || echo missing
}

ensure_container() {  # ensure_container NAME: running, with no network but loopback
  local c=$1
  case $(container_running "$c") in
    true) ;;
    false)
      log "starting $c again (it gets a new network namespace: plug will rebuild its port)"
      docker start "$c" >/dev/null
      ;;
    *)
      log "starting $c ($IMAGE, --net=none)"
      docker run -d --name "$c" --hostname "$c" --net=none "$IMAGE" \
        sh -c 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
      ;;
  esac
}

plug() {  # plug NAME TENANT [IP]: plugs the container (again, if it lost its port) and logs its address
  local c=$1 t=$2 fixed=${3:-} pid result
  pid=$(docker inspect -f '{{.State.Pid}}' "$c")
  if [ -n "$fixed" ]; then
    result=$(overlay-agent plug "$c" --tenant "$t" --pid "$pid" --ip "$fixed")
  else
    result=$(overlay-agent plug "$c" --tenant "$t" --pid "$pid")
  fi
  log "plugged $c into $t: $(jq -r '"\(.ip)/\(.prefix) mac \(.mac) mtu \(.mtu) gateway \(.gateway) port \(.port)"' <<<"$result")"
}

endpoints() {  # endpoints TENANT: "CONTAINER HOST IP" for every endpoint of the tenant, cluster-wide
  etcdctl --endpoints "$ETCD_ENDPOINTS" get --prefix "$PREFIX/endpoints/$1/" --print-value-only \
    | jq -r 'select(type == "object") | "\(.container_id) \(.host) \(.ip)"'
}

hosts_plugged() {  # hosts_plugged HOST...: every HOST has a container in every tenant
  local t h
  for t in "${TENANTS[@]}"; do
    for h in "$@"; do
      endpoints "$t" | awk -v h="$h" '$2 == h { found = 1 } END { exit !found }' || return 1
    done
  done
}

reach() {  # reach CONTAINER IP: pings until it answers (tunnels take a moment), prints the avg rtt
  local c=$1 ip=$2 out
  for _ in $(seq 15); do
    if out=$(docker exec "$c" ping -c 3 -W 2 -q "$ip" 2>/dev/null); then
      sed -n 's|.*= [^/]*/\([^/]*\)/.*|\1 ms|p' <<<"$out"
      return 0
    fi
    sleep 1
  done
  return 1
}

check() {
  local me t here c h ip rtt answer ok=0 bad=0
  me=$(overlay-agent status --json | jq -r .host.name)
  log "check from $me: same tenant reachable across VMs, the other tenant not"
  for t in "${TENANTS[@]}"; do
    here=$t-$me
    [ "$(container_running "$here")" = true ] || { echo "  skip  no running $here on $me"; continue; }
    while read -r c h ip <&3; do
      [ "$h" = "$me" ] && continue
      if rtt=$(reach "$here" "$ip"); then
        answer=$(docker exec "$here" wget -q -O - -T 3 "http://$ip/" 2>/dev/null || true)
        if [ "$answer" = "$c" ]; then
          echo "  ok    $here -> $c ($ip on $h, ${TUNNEL[$t]}): ping $rtt, http answers $answer"
          ok=$((ok + 1))
        else
          echo "  FAIL  $here -> $c ($ip on $h): ping ok but http answered '$answer', not $c"
          bad=$((bad + 1))
        fi
      else
        echo "  FAIL  $here -> $c ($ip on $h, ${TUNNEL[$t]}): no ping reply"
        bad=$((bad + 1))
      fi
    done 3< <(endpoints "$t")
  done
  if [ -n "$(endpoints blue | awk -v c="$BLUE_ONLY" '$1 == c')" ] && [ "$(container_running "red-$me")" = true ]; then
    if docker exec "red-$me" ping -c 2 -W 1 "$BLUE_ONLY_IP" >/dev/null 2>&1; then
      echo "  FAIL  red-$me reached $BLUE_ONLY_IP ($BLUE_ONLY, tenant blue): tenants are not isolated"
      bad=$((bad + 1))
    else
      echo "  ok    red-$me cannot reach $BLUE_ONLY_IP ($BLUE_ONLY, tenant blue): isolated"
      ok=$((ok + 1))
    fi
  fi
  echo "  $ok passed, $bad failed"
  [ "$bad" = 0 ]
}

up() {
  local me t
  wait_until 120 "the overlay-agent API (systemctl status overlay-agent)" overlay-agent status ||
    die "overlay-agent is not running: run agent.sh first"
  me=$(overlay-agent status --json | jq -r .host.name)
  if [ "${DEMO_CREATE_TENANTS:-0}" = 1 ]; then
    for t in "${TENANTS[@]}"; do create_tenant "$t"; done
  fi
  for t in "${TENANTS[@]}"; do
    wait_until "$WAIT_SECONDS" "tenant $t (node1 creates it)" tenant_exists "$t" || die "no tenant $t"
  done
  overlay-agent tenant list

  if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "pulling $IMAGE"
    docker pull -q "$IMAGE" >/dev/null
  fi
  for t in "${TENANTS[@]}"; do
    ensure_container "$t-$me"
    plug "$t-$me" "$t"
  done
  if [ "${DEMO_BLUE_ONLY:-0}" = 1 ]; then
    ensure_container "$BLUE_ONLY"
    plug "$BLUE_ONLY" blue "$BLUE_ONLY_IP"
  fi

  if [ -n "${DEMO_WAIT_FOR:-}" ]; then
    local -a hosts
    read -ra hosts <<<"$DEMO_WAIT_FOR"
    log "waiting for ${hosts[*]} to plug their containers"
    # On a timeout the check below shows what is missing.
    wait_until "$WAIT_SECONDS" "containers on ${hosts[*]}" hosts_plugged "${hosts[@]}" || true
  fi
  echo
  overlay-agent status
  echo
  check
}

down() {
  local me c
  me=$(overlay-agent status --json 2>/dev/null | jq -r .host.name) || me=$(hostname)
  for c in "red-$me" "blue-$me" "$BLUE_ONLY"; do
    overlay-agent unplug "$c" 2>/dev/null || true
    if [ "$(container_running "$c")" != missing ]; then
      docker rm -f "$c" >/dev/null
      log "removed $c"
    fi
  done
  log "tenants stay: overlay-agent tenant delete red; overlay-agent tenant delete blue (once every node ran down)"
}

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ${1:-up})"
command -v overlay-agent >/dev/null || die "overlay-agent is not installed: run agent.sh first"
case "${1:-up}" in
  up) up ;;
  check) check ;;
  down) down ;;
  *) echo "usage: $0 [up | check | down]" >&2; exit 2 ;;
esac
