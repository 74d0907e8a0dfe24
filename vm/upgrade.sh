# shellcheck shell=bash
# The upgrade from the port-per-peer release (`make old-agent`: commit OLD_AGENT_COMMIT of the
# Makefile, a debug build in target/old-agent/; its files are read from git history) to this checkout's
# agent, on the kernel datapath, sourced by vm/vm-test.sh. vm1 and vm2 are provisioned with the
# old release (its binary and its packaged config), vm3 with this one: a rolling upgrade caught
# half way. Containers the old agents plug carry traffic across it, then vm2 and vm1 are
# upgraded in place the way an operator does it (`make install`, `systemctl restart
# overlay-agent`) while the traffic runs.
#
# The old release's systemd unit is not used: under it every plug failed (ProtectKernelTunables
# without ReadWritePaths=/proc/sys/net: EROFS turning IPv6 off on the veth, fixed in the unit
# since), so the old binary runs under this checkout's unit, as an operator who had fixed that
# would have run it.

OLD_DIR=${OLD_AGENT_DIR:-$TARGET/old-agent}

old_preflight() {
  [ -x "$OLD_DIR/overlay-agent" ] || die "the old agent is missing in $OLD_DIR: make old-agent (make vm-test does it)"
  OLD_COMMIT=$(cat "$OLD_DIR/commit")
  git -C "$VM_TOP" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null ||
    die "commit $OLD_COMMIT (the old agent's) is not in this clone: git fetch --unshallow"
}

# /mnt/host/old in the guests: what `make install` reads, with the old release's binary (its
# symbols stripped: a debug build is 190 MB), README and config, and this checkout's Makefile
# and the rest of its packaging (units, example CNI network), which that Makefile installs.
fill_old_share() {
  local o=$VM_SHARE/old
  mkdir -p "$o/target/release" "$o/config"
  cp -r "$VM_TOP/Makefile" "$VM_TOP/packaging" "$o/"
  local f
  for f in README.md packaging/agent.toml config/agent.example.toml; do
    git -C "$VM_TOP" show "$OLD_COMMIT:$f" >"$o/$f"
  done
  strip -o "$o/target/release/overlay-agent" "$OLD_DIR/overlay-agent"
  # This Makefile's install also wants a CNI plugin, which the old release did not have: this
  # checkout's goes along (nothing in the test calls it before the upgrade).
  cp "$CNI" "$o/target/release/overlay-cni"
}

# The interfaces of tunnel type on guest I's br-tun: "name remote_ip", sorted.
tunnel_ports() {
  # shellcheck disable=SC2016  # expanded in the guest
  vm_ssh "$1" 'for p in $(ovs-vsctl list-ports br-tun); do
      t=$(ovs-vsctl get interface "$p" type); case $t in vxlan|gre) ;; *) continue ;; esac
      echo "$p $(ovs-vsctl get interface "$p" options:remote_ip | tr -d \")"
    done | sort'
}

upgrade() {  # upgrade I: this checkout's `make install` over the old one, then a restart
  vm_ssh "$1" "make -s -C /mnt/host install NOBUILD=1 && systemctl daemon-reload &&
    systemctl restart overlay-agent" >>"$VM_RUN/setup-vm$1.log" 2>&1
}

# The old agents plug up-red-vm1/up-red-vm2 (vxlan, old <-> old) and up-blue-vm2 (gre) and the
# new one up-blue-vm3 (old <-> new). vm2, then vm1 are upgraded while red-vm1 -> red-vm2 and
# blue-vm3 -> blue-vm2 ping 20 times a second: the longest outage of each stream must stay
# within a second, each upgraded agent registered again, each upgraded br-tun without its
# per-peer ports, and the new binary in place.
check_upgrade() {
  local i s sent lost gap ports bad="" done_hosts="" summary=""
  for s in 1:up-red-vm1 2:up-red-vm2 2:up-blue-vm2 3:up-blue-vm3; do run_container "${s%%:*}" "${s#*:}"; done
  plug 1 up-red-vm1 red; plug 2 up-red-vm2 red; plug 2 up-blue-vm2 blue; plug 3 up-blue-vm3 blue
  ports=$(tunnel_ports 2)
  if ! grep -q " $(vm_ip 1)\$" <<<"$ports" || ! grep -q " $(vm_ip 3)\$" <<<"$ports"; then
    fail "upgrade" "vm2 under the old agent should have per-peer tunnel ports to vm1 and vm3, has: $(tr '\n' ' ' <<<"$ports")"
    return
  fi
  ping_start up-red 1 up-red-vm1 "${IP[up-red-vm2]}"
  ping_start up-blue 3 up-blue-vm3 "${IP[up-blue-vm2]}"
  if ! wait_replies up-red 20 60 || ! wait_replies up-blue 20 60; then
    ping_stop up-red >/dev/null; ping_stop up-blue >/dev/null
    fail "upgrade" "no traffic across the old agents (old <-> old vxlan $(ping_replies up-red), old <-> new gre $(ping_replies up-blue) replies)"
    return
  fi
  for i in 2 1; do
    if ! upgrade "$i"; then bad+=" make install or the restart failed on vm$i (log: setup-vm$i.log);"; continue; fi
    wait_registered "$i" 120 || bad+=" vm$i's agent did not register after the upgrade: $(vm_ssh "$i" 'overlay-agent status 2>&1 | head -3' | tr '\n' ' ');"
    [ "$(vm_ssh "$i" "sha256sum </usr/local/bin/overlay-agent")" = "$(sha256sum <"$AGENT")" ] ||
      bad+=" vm$i does not run this checkout's binary;"
    ports=$(tunnel_ports "$i")
    grep -q '^tun-vx-.* flow$' <<<"$ports" || bad+=" vm$i has no flow-based vxlan port: $(tr '\n' ' ' <<<"$ports");"
    ! grep -qv ' flow$' <<<"$ports" || bad+=" vm$i still has per-peer ports: $(grep -v ' flow$' <<<"$ports" | tr '\n' ' ');"
    done_hosts+=" vm$i"
    # The next upgrade once the stream has run on this one for a while.
    wait_replies up-red $(($(ping_replies up-red) + 40)) 60 || bad+=" up-red stopped answering after vm$i's upgrade;"
    wait_replies up-blue $(($(ping_replies up-blue) + 40)) 60 || bad+=" up-blue stopped answering after vm$i's upgrade;"
  done
  for s in up-red:vxlan up-blue:gre; do
    read -r sent lost gap <<<"$(ping_stop "${s%%:*}")"
    summary+=" ${s#*:} $sent echoes, $lost lost, longest outage $((gap * 50)) ms;"
    ((sent >= 100 && gap <= 20)) || bad+=" ${s#*:} stream: $lost of $sent echoes lost, $gap in a row (want at most 20: 1 s);"
  done
  if [ -z "$bad" ]; then
    ok "upgrade under traffic: vm2 then vm1 from the port-per-peer release to this agent (make install, systemctl restart):${summary%;}; per-peer ports gone"
  else
    fail "upgrade" "upgraded:${done_hosts:- none};$bad"
  fi
}

# Containers the old agents plugged, served by the new ones: up-red-vm1 and red-vm3 (plugged by
# the new agent) reach each other, and the new agent unplugs up-red-vm1 without a trace of its
# port or record.
check_adopted() {
  local bad="" port
  reach 1 up-red-vm1 "${IP[red-vm3]}" >/dev/null || bad+=" up-red-vm1 cannot reach red-vm3;"
  reach 3 red-vm3 "${IP[up-red-vm1]}" >/dev/null || bad+=" red-vm3 cannot reach up-red-vm1;"
  # shellcheck disable=SC2153  # PORT is vm-test.sh's
  port=${PORT[up-red-vm1]}
  vm_ssh 1 "overlay-agent unplug up-red-vm1" >/dev/null || bad+=" unplug up-red-vm1 failed;"
  ! vm_ssh 1 "ovs-vsctl list-ports br-int" | grep -qx "$port" || bad+=" its port $port is still on br-int;"
  [ -z "$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix --keys-only /overlay/endpoints/red/up-red-vm1)" ] ||
    bad+=" its endpoint record is still in etcd;"
  if [ -z "$bad" ]; then
    ok "adopted containers: up-red-vm1 (plugged by the old agent on vm1) and red-vm3 (by the new one) reach each other; the new agent unplugs it, port $port and record gone"
  else
    fail "adopted containers" "$bad"
  fi
}
