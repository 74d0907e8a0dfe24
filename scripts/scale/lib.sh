#!/usr/bin/env bash
# Sourced by the scale scripts: an ovsdb-server and an ovs-vswitchd of this run only, in a
# network namespace and a temporary directory of their own, both gone when the script exits.
#   scale_ovs_up TAG   sets NS (the namespace) and D (the directory: db.sock, <bridge>.mgmt,
#                      the daemons' logs), starts both daemons with OVS_RUNDIR=D.

scale_cleanup() {
  for p in vs ovsdb; do
    if [ -f "$D/$p.pid" ]; then kill "$(cat "$D/$p.pid")" 2>/dev/null || true; fi
  done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$D"
}

scale_ovs_up() {
  # Names of this run only: another run (or a copy of the script) may be going on.
  NS=$1-$$; D=$(mktemp -d "/tmp/$1.XXXXXX")
  trap scale_cleanup EXIT
  ip netns add "$NS"; ip -n "$NS" link set lo up
  ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec "$NS" ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb.pid" \
    --unixctl="$D/ovsdb.ctl" --detach --log-file="$D/ovsdb.log"
  ovs-vsctl --db="unix:$D/db.sock" --no-wait init
  ip netns exec "$NS" env OVS_RUNDIR="$D" ovs-vswitchd "unix:$D/db.sock" --pidfile="$D/vs.pid" \
    --unixctl="$D/vs.ctl" --detach --log-file="$D/vs.log"
}
