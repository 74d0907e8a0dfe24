#!/usr/bin/env bash
# CI for the Vagrant demo's provisioning logic without VMs or a Docker engine: runs the REAL
# vagrant/provision/demo.sh (`up`, then `check`, then `down`) once per host of the one-machine
# netns demo (scripts/demo.sh hosts: etcd, netns ovd-h1..3, each with its own OVS and agent).
#   scripts/provision-check.sh          (root; the agent built: cargo build -p overlay-agent)
# demo.sh finds these on its PATH instead of the VM's tools:
#   docker          a shim (this script, `__docker`): a "container" is a network namespace
#                   ovp-hN-<name> with `busybox httpd` serving the container's hostname, which is
#                   what the busybox:stable container of demo.sh does; `docker exec` runs the
#                   command's busybox applet in that namespace. Only what demo.sh uses is
#                   emulated; anything else fails loudly (and fails this check).
#   overlay-agent   the binary built in this checkout; OVERLAY_API_SOCKET names the agent of the
#                   host being provisioned (/run/overlay-demo/hN/api.sock).
# and OVERLAY_AGENT_CONF is a generated agent.toml naming the demo's etcd and prefix (demo.sh reads
# the etcd endpoints and prefix from it, as in the VMs). The hosts get the Vagrantfile's demo
# settings: demo-h1 creates the tenants and runs blue-only, demo-h3 waits for every host.
# Fails when demo.sh fails (its ping/http/isolation checks), when a check ran fewer checks than
# the topology implies, or when `down` left a container behind. Everything is removed on exit,
# on failure too: the container namespaces (ovp-*), their processes, and the demo
# (scripts/demo.sh down, which also removes a `make demo` left running).
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
SELF=$TOP/scripts/provision-check.sh
DEMO=$TOP/scripts/demo.sh
PROVISION=$TOP/vagrant/provision/demo.sh
AGENT=${AGENT:-${CARGO_TARGET_DIR:-$TOP/target}/debug/overlay-agent}
RUN=/run/overlay-demo                  # scripts/demo.sh's run dir (api sockets, agent logs)
ETCD=http://127.0.0.1:23799            # scripts/demo.sh's etcd and prefix
ETCD_PREFIX=/overlay-demo
NS_PREFIX=ovp-                         # container namespaces (scripts/demo.sh owns ovd-*)
HOSTS=(1 2 3)

# ---- the docker shim -------------------------------------------------------------------------
# One state directory per demo host, as each VM has its own Docker: $PROVISION_CHECK_STATE is
# <tmp>/docker/hN, a container's state is in its <name>/ (ns, pid, cmd, www/index.html, httpd.log),
# its network namespace is ovp-hN-<name>. Every call is logged to calls, unsupported ones also to
# unsupported.

shim_fail() {  # shim_fail RC MESSAGE: docker-like error; unsupported calls are also recorded
  echo "docker shim (scripts/provision-check.sh): $2" >&2
  if [ "$1" = 125 ]; then echo "$2" >>"$PROVISION_CHECK_STATE/unsupported"; fi
  exit "$1"
}

shim_running() {  # shim_running NAME: the container's httpd is alive
  local d=$PROVISION_CHECK_STATE/$1 pid
  [ -f "$d/pid" ] || return 1
  pid=$(cat "$d/pid")
  kill -0 "$pid" 2>/dev/null && grep -q httpd "/proc/$pid/cmdline" 2>/dev/null
}

shim_boot() {  # shim_boot NAME: a fresh network namespace (as docker gives) and httpd in it
  local d=$PROVISION_CHECK_STATE/$1 ns
  ns=$(cat "$d/ns")
  if ip netns list | awk '{print $1}' | grep -xF "$ns" >/dev/null; then ip netns del "$ns"; fi
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" busybox httpd -f -p 80 -h "$d/www" </dev/null >>"$d/httpd.log" 2>&1 &
  echo $! >"$d/pid"
  sleep 0.2
  shim_running "$1" || shim_fail 1 "container $1: httpd did not start: $(cat "$d/httpd.log")"
}

shim_run() {  # docker run -d --name NAME [--hostname H] --net=none IMAGE [CMD...]
  local name="" host="" net="" detach=0 d
  while [ $# -gt 0 ]; do
    case $1 in
      -d | --detach) detach=1 ;;
      --name) name=${2:-}; shift ;;
      --name=*) name=${1#--name=} ;;
      -h | --hostname) host=${2:-}; shift ;;
      --hostname=*) host=${1#--hostname=} ;;
      --net | --network) net=${2:-}; shift ;;
      --net=* | --network=*) net=${1#*=} ;;
      -*) shim_fail 125 "unsupported: docker run option $1" ;;
      *) break ;;
    esac
    shift
  done
  [ $# -ge 1 ] || shim_fail 125 "docker run: no image"
  if [ "$detach" != 1 ] || [ "$net" != none ] || [ -z "$name" ]; then
    shim_fail 125 "unsupported: docker run without -d, --net=none and --name"
  fi
  d=$PROVISION_CHECK_STATE/$name
  [ ! -e "$d" ] || shim_fail 125 "docker run: the container name \"$name\" is already in use"
  # The image's command (demo.sh: write `hostname` to /www/index.html, exec httpd) is emulated,
  # not run: the page is the hostname, httpd serves it from the container's own directory.
  mkdir -p "$d/www"
  printf '%s\n' "${host:-$name}" >"$d/www/index.html"
  printf '%s\n' "$NS_PREFIX${PROVISION_CHECK_STATE##*/}-$name" >"$d/ns"
  printf '%s\n' "$*" >"$d/cmd"
  shim_boot "$name"
  printf '%s\n' "$name"
}

shim_inspect() {  # docker inspect -f '{{.State.Running}}' | '{{.State.Pid}}' NAME
  local fmt=""
  case ${1:-} in
    -f | --format) fmt=${2:-}; shift 2 ;;
    --format=*) fmt=${1#--format=}; shift ;;
    *) shim_fail 125 "unsupported: docker inspect without -f" ;;
  esac
  [ $# = 1 ] || shim_fail 125 "unsupported: docker inspect of $# objects"
  [ -d "$PROVISION_CHECK_STATE/$1" ] || shim_fail 1 "Error: No such object: $1"
  case $fmt in
    '{{.State.Running}}') if shim_running "$1"; then echo true; else echo false; fi ;;
    '{{.State.Pid}}') if shim_running "$1"; then cat "$PROVISION_CHECK_STATE/$1/pid"; else echo 0; fi ;;
    *) shim_fail 125 "unsupported: docker inspect -f '$fmt'" ;;
  esac
}

shim_exec() {  # docker exec NAME CMD ARGS...: the busybox applet CMD in the container's namespace
  local c=${1:-}
  case $c in -*) shim_fail 125 "unsupported: docker exec option $c" ;; esac
  [ $# -ge 2 ] || shim_fail 125 "docker exec: no command"
  shift
  [ -d "$PROVISION_CHECK_STATE/$c" ] || shim_fail 1 "Error: No such container: $c"
  shim_running "$c" || shim_fail 1 "Error response from daemon: container $c is not running"
  busybox --list | grep -xF "$1" >/dev/null || shim_fail 125 "unsupported: docker exec $c $1 (not a busybox applet)"
  local ns
  ns=$(cat "$PROVISION_CHECK_STATE/$c/ns")
  if [ "$1" = wget ]; then shim_wget "$ns" "${@:2}"; fi
  exec ip netns exec "$ns" busybox "$@"
}

shim_wget() {  # shim_wget NS ARGS...: busybox wget with -T N run as `timeout N busybox wget`
  # Debian 12's busybox (1.35) is built without FEATURE_WGET_TIMEOUT and segfaults on -T; the
  # busybox:stable image has it. Same meaning, minus the crash: the timeout bounds the fetch.
  local ns=$1 secs="" a
  local -a args=()
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      -T) secs=${2:-}; shift ;;
      -T*) secs=${1#-T} ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  [ -n "$secs" ] || return 0
  for a in "${args[@]}"; do
    case $a in -*T*) shim_fail 125 "unsupported: docker exec wget with -T among combined options ($a)" ;; esac
  done
  exec timeout "$secs" ip netns exec "$ns" busybox wget "${args[@]}"
}

shim_start() {  # docker start NAME...
  local c
  [ $# -ge 1 ] || shim_fail 125 "docker start: no container"
  for c in "$@"; do
    case $c in -*) shim_fail 125 "unsupported: docker start option $c" ;; esac
    [ -d "$PROVISION_CHECK_STATE/$c" ] || shim_fail 1 "Error: No such container: $c"
    shim_running "$c" || shim_boot "$c"
    printf '%s\n' "$c"
  done
}

shim_rm() {  # docker rm [-f] NAME...
  local force=0 c d pid ns
  while [ $# -gt 0 ]; do
    case $1 in
      -f | --force) force=1 ;;
      -*) shim_fail 125 "unsupported: docker rm option $1" ;;
      *) break ;;
    esac
    shift
  done
  for c in "$@"; do
    d=$PROVISION_CHECK_STATE/$c
    if [ ! -d "$d" ]; then
      [ "$force" = 1 ] || shim_fail 1 "Error: No such container: $c"
      continue
    fi
    if shim_running "$c"; then
      [ "$force" = 1 ] || shim_fail 1 "Error: cannot remove running container $c: stop it or use -f"
      pid=$(cat "$d/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    ns=$(cat "$d/ns")
    if ip netns list | awk '{print $1}' | grep -xF "$ns" >/dev/null; then ip netns del "$ns"; fi
    rm -rf "$d"
    printf '%s\n' "$c"
  done
}

docker_shim() {
  : "${PROVISION_CHECK_STATE:?the docker shim runs under scripts/provision-check.sh only}"
  printf '%s\n' "docker $*" >>"$PROVISION_CHECK_STATE/calls"
  local cmd=${1:-}
  [ $# = 0 ] || shift
  case $cmd in
    run) shim_run "$@" ;;
    inspect) shim_inspect "$@" ;;
    exec) shim_exec "$@" ;;
    start) shim_start "$@" ;;
    rm) shim_rm "$@" ;;
    image)
      # The image is busybox itself, always "present".
      [ "${1:-}" = inspect ] || shim_fail 125 "unsupported: docker image $*"
      ;;
    pull) ;;
    *) shim_fail 125 "unsupported: docker $cmd $*" ;;
  esac
}

# ---- the check -------------------------------------------------------------------------------

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

need() {  # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (for $1)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

remove_containers() {  # every ovp-* namespace and what runs in it (also from a killed run)
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

provision() {  # provision HOST ARGS...: vagrant/provision/demo.sh ARGS as node demo-hHOST
  local i=$1 first=0 wait_for="" h
  shift
  # The Vagrantfile's settings: the first node creates the tenants and runs blue-only, the last
  # one waits for every node's containers.
  if [ "$i" = "${HOSTS[0]}" ]; then first=1; fi
  if [ "$i" = "${HOSTS[${#HOSTS[@]} - 1]}" ]; then
    for h in "${HOSTS[@]}"; do wait_for="$wait_for${wait_for:+ }demo-h$h"; done
  fi
  env -u ETCD_ENDPOINTS \
    PATH="$TMP/bin:$PATH" \
    PROVISION_CHECK_STATE="$TMP/docker/h$i" \
    OVERLAY_API_SOCKET="$RUN/h$i/api.sock" \
    OVERLAY_AGENT_CONF="$TMP/agent.toml" \
    DEMO_CREATE_TENANTS="$first" \
    DEMO_BLUE_ONLY="$first" \
    DEMO_WAIT_FOR="$wait_for" \
    DEMO_WAIT_SECONDS="${DEMO_WAIT_SECONDS:-120}" \
    bash "$PROVISION" "$@"
}

checks_passed() {  # checks_passed HOST OUTPUT: demo.sh's own count, when it ran every check
  local i=$1 pass="" fail="" expected
  read -r pass fail < <(sed -n 's/^ *\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' <<<"$2" | tail -n 1) || true
  # Every other host's red and blue container, blue-only unless it runs here, and isolation.
  expected=$((2 * (${#HOSTS[@]} - 1) + 1))
  [ "$i" = "${HOSTS[0]}" ] || expected=$((expected + 1))
  if [ "${fail:-x}" != 0 ] || [ "${pass:-0}" != "$expected" ]; then
    echo "error: demo-h$i: ${pass:-?} passed, ${fail:-?} failed; expected $expected passed" >&2
    exit 1
  fi
  echo "$pass"
}

TMP=""
HOSTS_UP=0
DOWN_DONE=0
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  set +e
  if [ "$rc" != 0 ] && [ "$HOSTS_UP" = 1 ] && [ ! -d "$RUN" ]; then
    echo "provision-check: $RUN is gone: something else ran scripts/demo.sh (up or down) meanwhile" >&2
  elif [ "$rc" != 0 ] && [ "$HOSTS_UP" = 1 ]; then
    for i in "${HOSTS[@]}"; do
      echo "--- last lines of $RUN/h$i/agent.log" >&2
      tail -n 15 "$RUN/h$i/agent.log" >&2
    done
    for i in "${HOSTS[@]}"; do
      if [ -s "$TMP/docker/h$i/calls" ]; then echo "--- docker calls on demo-h$i" >&2; cat "$TMP/docker/h$i/calls" >&2; fi
    done
  fi
  if [ "$HOSTS_UP" = 1 ] && [ "$DOWN_DONE" = 0 ]; then
    for i in "${HOSTS[@]}"; do provision "$i" down >/dev/null 2>&1; done
  fi
  remove_containers
  if [ "$HOSTS_UP" = 1 ]; then bash "$DEMO" down >/dev/null 2>&1; fi
  if [ -n "$TMP" ]; then rm -rf "$TMP"; fi
  if [ "$rc" != 0 ]; then echo "provision-check: FAILED (exit $rc)" >&2; fi
  exit "$rc"
}

main() {
  local i out pid n total=0 names=""
  [ "$(id -u)" = 0 ] || { echo "error: $0 needs root (network namespaces, OVS)" >&2; exit 1; }
  [ -x "$AGENT" ] || { echo "error: $AGENT not built: cargo build -p overlay-agent" >&2; exit 1; }
  need busybox busybox
  need jq jq
  need etcdctl etcd-client

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  remove_containers
  TMP=$(mktemp -d /tmp/provision-check.XXXXXX)
  mkdir -p "$TMP/bin"
  for i in "${HOSTS[@]}"; do mkdir -p "$TMP/docker/h$i"; done
  printf '#!/bin/sh\nexec bash %q __docker "$@"\n' "$SELF" >"$TMP/bin/docker"
  printf '#!/bin/sh\nexec %q "$@"\n' "$AGENT" >"$TMP/bin/overlay-agent"
  chmod +x "$TMP/bin/docker" "$TMP/bin/overlay-agent"
  cat >"$TMP/agent.toml" <<EOF
# scripts/provision-check.sh: what vagrant/provision/demo.sh reads of an agent's config
[etcd]
endpoints = ["$ETCD"]
prefix = "$ETCD_PREFIX"
EOF

  HOSTS_UP=1
  bash "$DEMO" hosts

  for i in "${HOSTS[@]}"; do
    say "vagrant/provision/demo.sh up on demo-h$i"
    provision "$i" up
  done
  for i in "${HOSTS[@]}"; do
    say "vagrant/provision/demo.sh check on demo-h$i"
    out=$(provision "$i" check) || { printf '%s\n' "$out"; echo "error: demo.sh check failed on demo-h$i" >&2; exit 1; }
    printf '%s\n' "$out"
    n=$(checks_passed "$i" "$out") || exit 1
    total=$((total + n))
  done

  # `up` again is idempotent and re-plugs a container that stopped (as after a VM reboot): docker
  # start gives it a new network namespace, and plug must build its port again.
  i=${HOSTS[1]}
  say "vagrant/provision/demo.sh up again on demo-h$i, red-demo-h$i stopped first"
  pid=$(cat "$TMP/docker/h$i/red-demo-h$i/pid")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  out=$(provision "$i" up) || { printf '%s\n' "$out"; echo "error: demo.sh up again failed on demo-h$i" >&2; exit 1; }
  printf '%s\n' "$out"
  grep -q "starting red-demo-h$i again" <<<"$out" || { echo "error: demo.sh did not restart red-demo-h$i" >&2; exit 1; }
  n=$(checks_passed "$i" "$out") || exit 1
  total=$((total + n))

  for i in "${HOSTS[@]}"; do
    say "vagrant/provision/demo.sh down on demo-h$i"
    provision "$i" down
  done
  DOWN_DONE=1

  # down must leave no container, port or endpoint behind, and the shim must have been enough.
  names=$(find "$TMP"/docker/h* -mindepth 1 -maxdepth 1 -type d -printf '%P ')
  [ -z "$names" ] || { echo "error: containers left after down: $names" >&2; exit 1; }
  out=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix "$ETCD_PREFIX/endpoints/" --keys-only)
  [ -z "$out" ] || { echo "error: endpoints left in etcd after down: $out" >&2; exit 1; }
  for i in "${HOSTS[@]}"; do
    out=$(OVERLAY_API_SOCKET=$RUN/h$i/api.sock "$AGENT" endpoints --json | jq -r '.[].container_id')
    [ -z "$out" ] || { echo "error: demo-h$i still has endpoints: ${out//$'\n'/ }" >&2; exit 1; }
  done
  out=$(cat "$TMP"/docker/h*/unsupported 2>/dev/null || true)
  if [ -n "$out" ]; then
    printf 'error: demo.sh made docker calls the shim does not emulate:\n%s\n' "$out" >&2
    exit 1
  fi
  echo
  echo "provision-check: ok: vagrant/provision/demo.sh up, check and down on ${#HOSTS[@]} hosts, up again on demo-h${HOSTS[1]}; checks: $total passed, 0 failed"
}

if [ "${1:-}" = __docker ]; then
  shift
  docker_shim "$@"
  exit 0
fi
main "$@"
