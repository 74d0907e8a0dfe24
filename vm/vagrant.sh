#!/usr/bin/env bash
# make vagrant-up / make vagrant-down: the Vagrant demo (vagrant/) for real, with the libvirt
# provider on this machine, from a box built here from Debian packages (no download).
#   vm/vagrant.sh up     deps, the local box (built from vm/image.sh's image if missing or out of
#                        date), libvirtd (started by hand where nothing runs it), then
#                        `vagrant up --provider=libvirt`; ends with the demo's live check
#   vm/vagrant.sh down   vagrant destroy, then remove what libvirt still holds of the demo
#                        (domains, networks, volumes, the uploaded box image)
# OVERLAY_BOX names another box (a published one on a machine with internet): then no local box
# is built. The demo's settings for this machine (1 vCPU and 1 GiB per VM, networks in the
# 198.18.0.0/16 test range, isolated, i.e. no NAT to the outside) are environment variables the
# Vagrantfile reads; set them yourself to change them.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vm/lib.sh
. "$HERE/lib.sh"
# shellcheck source=vm/image.sh
. "$HERE/image.sh"

LOCAL_BOX=overlay-agent/bookworm-local
export OVERLAY_BOX=${OVERLAY_BOX:-$LOCAL_BOX}
export OVERLAY_SUBNET=${OVERLAY_SUBNET:-198.18.201}
export OVERLAY_VM_CPUS=${OVERLAY_VM_CPUS:-1}
export OVERLAY_VM_MEMORY=${OVERLAY_VM_MEMORY:-1024}
export OVERLAY_LIBVIRT_MGMT_NET=${OVERLAY_LIBVIRT_MGMT_NET:-198.18.202.0/24}
export OVERLAY_LIBVIRT_FORWARD=${OVERLAY_LIBVIRT_FORWARD:-none}
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt
VIRSH=(virsh -c qemu:///system)
DEMO_DIR=$VM_TOP/vagrant
TARGET=${CARGO_TARGET_DIR:-$VM_TOP/target}

vagrant_deps() {
  vm_deps
  vm_apt_install vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base rsync
}

# libvirtd: used as it is when it answers; else started by hand (this kind of machine has no
# systemd). Its stock "default" network (NAT on 192.168.122.0/24) is not autostarted: the demo
# brings its own networks, and nothing here routes to private ranges.
libvirt_up() {
  if "${VIRSH[@]}" version >/dev/null 2>&1; then return 0; fi
  [ "$(id -u)" = 0 ] || die "libvirtd is not running and only root can start it"
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  local deadline=$((SECONDS + 30))
  until "${VIRSH[@]}" version >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "libvirtd does not answer on qemu:///system after 30 s"
    sleep 0.2
  done
  log "libvirtd started ($("${VIRSH[@]}" version | sed -n 's/^Running hypervisor: //p'))"
}

# The box: the vm-test image plus, beside it, its ssh key. Its own
# Vagrantfile (merged under the project's) carries what is particular to it and to this machine.
box_key_file() { echo "$VM_CACHE/box.key"; }
box_build() {
  vm_image
  local key
  key=$(basename "$VM_IMG")
  if (cd "$VM_CACHE" && vagrant box list 2>/dev/null) | grep -q "^$LOCAL_BOX " && [ "$(cat "$(box_key_file)" 2>/dev/null)" = "$key" ]; then
    log "box $LOCAL_BOX is up to date ($key)"
    return 0
  fi
  local t0=$SECONDS dir=$VM_CACHE/box-build drv=kvm
  [ "$(vm_accel)" = tcg ] && drv=qemu
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$VM_IMG/base.qcow2" "$dir/box.img"
  cp "$VM_IMG/id_ed25519" "$dir/"
  printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' \
    "$(qemu-img info --output=json "$dir/box.img" | jq '."virtual-size" / 1073741824 | ceil')" >"$dir/metadata.json"
  # Under TCG (libvirt domain type qemu) SeaBIOS hangs in System Management Mode before grub
  # (the CPU stays at f000:fe11 or f000:ff53 with SMM=1); with SMM off the guest boots.
  # vagrant-libvirt has no SMM setting, but writes each entry of `features` as an element.
  local features='["acpi", "apic", "pae"]'
  [ "$drv" = kvm ] || features='["acpi", "apic", "pae", "smm state='"'off'"'"]'
  cat >"$dir/Vagrantfile" <<EOF
# Box built by overlay-agent's vm/vagrant.sh from Debian 12 packages (image $key).
Vagrant.configure("2") do |config|
  # The image's own key (user vagrant): no insecure key to swap.
  config.ssh.private_key_path = File.join(File.dirname(__FILE__), "id_ed25519")
  config.vm.provider :libvirt do |lv|
    lv.driver = "$drv"
    lv.features = $features
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
    lv.graphics_type = "none"
    lv.video_type = "none"
  end
end
EOF
  tar -C "$dir" -cf "$VM_CACHE/box.tar" metadata.json Vagrantfile box.img id_ed25519
  rm -rf "$dir"
  # (in the cache: vagrant reads the Vagrantfile of the current directory or any above it)
  (cd "$VM_CACHE" && { vagrant box remove --force --all "$LOCAL_BOX" >/dev/null 2>&1 || true; } &&
    vagrant box add --force --name "$LOCAL_BOX" "$VM_CACHE/box.tar" >&2)
  rm -f "$VM_CACHE/box.tar"
  echo "$key" >"$(box_key_file)"
  log "box $LOCAL_BOX added in $((SECONDS - t0)) s"
}

up() {
  local t0=$SECONDS
  [ "$(id -u)" = 0 ] || die "make vagrant-up needs root (libvirt, box, networks)"
  [ -x "$TARGET/release/overlay-agent" ] ||
    die "$TARGET/release/overlay-agent is missing: cargo build --release -p overlay-agent (make vagrant-up does it)"
  vagrant_deps
  libvirt_up
  if [ "$OVERLAY_BOX" = "$LOCAL_BOX" ]; then box_build; else log "box $OVERLAY_BOX (OVERLAY_BOX): not built here"; fi
  log "vagrant up --provider=libvirt: 3 VMs ($OVERLAY_VM_CPUS vCPU, $OVERLAY_VM_MEMORY MiB, $(vm_accel)), private network $OVERLAY_SUBNET.0/24"
  local rc=0
  # (without the box upload's progress meter: one "Progress: N%" per block, on one line)
  (cd "$DEMO_DIR" && vagrant up --provider=libvirt) 2>&1 | sed -u 's/\x1b\[KProgress: [0-9]*%//g' |
    tee "$TARGET/vagrant-up.log" || rc=$?
  log "vagrant up finished in $((SECONDS - t0)) s (exit status $rc; log: $TARGET/vagrant-up.log)"
  ((rc == 0)) || die "vagrant up failed: see above; make vagrant-down removes what it left"
  # Every node's demo step ends with its check's count (the last node's waited for every node).
  local counts nodes passed failed
  counts=$(sed -n 's/^ *\(node[0-9]*\): *\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2 \3/p' "$TARGET/vagrant-up.log")
  nodes=$(wc -l <<<"$counts"); passed=$(awk '{p += $2} END {print p + 0}' <<<"$counts")
  failed=$(awk '{f += $3} END {print f + 0}' <<<"$counts")
  if [ -z "$counts" ] || [ "$nodes" != 3 ]; then die "vagrant up ended without a demo check on each of the 3 nodes: $counts"; fi
  echo "To run vagrant by hand here: cd vagrant && export OVERLAY_BOX=$OVERLAY_BOX OVERLAY_SUBNET=$OVERLAY_SUBNET" \
    "OVERLAY_VM_CPUS=$OVERLAY_VM_CPUS OVERLAY_VM_MEMORY=$OVERLAY_VM_MEMORY OVERLAY_LIBVIRT_MGMT_NET=$OVERLAY_LIBVIRT_MGMT_NET" \
    "OVERLAY_LIBVIRT_FORWARD=$OVERLAY_LIBVIRT_FORWARD"
  echo "vagrant-up took $((SECONDS - t0)) s; the demo's checks: $(awk '{printf "%s%s %s/%s", (NR > 1 ? ", " : ""), $1, $2, $2 + $3}' <<<"$counts")"
  echo "vagrant-demo: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}

down() {
  [ "$(id -u)" = 0 ] || die "make vagrant-down needs root"
  command -v vagrant >/dev/null || { log "vagrant is not installed: nothing to destroy"; return 0; }
  if "${VIRSH[@]}" version >/dev/null 2>&1 || libvirt_up; then :; fi
  (cd "$DEMO_DIR" && vagrant destroy -f) >&2 || log "vagrant destroy failed: removing by hand"
  # Whatever vagrant did not remove (a failed up, a lost .vagrant dir): the demo's own names.
  local d n v
  for d in $("${VIRSH[@]}" list --all --name | grep -E '^vagrant_node[0-9]+$' || true); do
    "${VIRSH[@]}" destroy "$d" >/dev/null 2>&1 || true
    "${VIRSH[@]}" undefine "$d" --nvram >/dev/null 2>&1 || "${VIRSH[@]}" undefine "$d" >/dev/null
  done
  for n in $("${VIRSH[@]}" net-list --all --name | grep -E '^(vagrant-libvirt|vagrant-overlay-|vagrant_network_)' || true); do
    "${VIRSH[@]}" net-destroy "$n" >/dev/null 2>&1 || true
    "${VIRSH[@]}" net-undefine "$n" >/dev/null
  done
  if "${VIRSH[@]}" pool-info default >/dev/null 2>&1; then
    for v in $("${VIRSH[@]}" vol-list default | awk 'NR > 2 && $1 ~ /^(vagrant_node[0-9]+|overlay-agent)/ {print $1}'); do
      "${VIRSH[@]}" vol-delete --pool default "$v" >/dev/null
    done
  fi
  rm -rf "$DEMO_DIR/.vagrant"
  echo "domains: $("${VIRSH[@]}" list --all --name | sed '/^$/d' | paste -sd' ')"
  echo "networks: $("${VIRSH[@]}" net-list --all --name | sed '/^$/d' | paste -sd' ')"
  echo "volumes: $("${VIRSH[@]}" vol-list default 2>/dev/null | awk 'NR > 2 && NF {print $1}' | paste -sd' ')"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  box) vagrant_deps; box_build ;;
  *) echo "usage: $0 up | down | box" >&2; exit 2 ;;
esac
