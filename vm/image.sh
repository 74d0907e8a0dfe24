# shellcheck shell=bash
# The guest image: Debian 12 from Debian's packages only (mmdebstrap), with Open vSwitch, Docker
# (and a local busybox:stable image imported from busybox-static: no registry), etcd, iperf3 and
# the tools vm-test and the Vagrant demo use. One image serves both: vm-test boots it with its
# kernel and initrd given to qemu, libvirt/Vagrant boot it through grub.
# Sourced after vm/lib.sh. vm_image sets VM_IMG to a directory holding base.qcow2, vmlinuz,
# initrd.img, id_ed25519 (root's and the vagrant user's ssh key) and console logs of the build.

VM_PACKAGES=(systemd-sysv udev kmod dbus ifupdown isc-dhcp-client iproute2 netbase openssh-server
  openvswitch-switch iperf3 ethtool iputils-ping tcpdump procps sudo rsync less
  linux-image-amd64 initramfs-tools zstd grub-pc e2fsprogs netcat-openbsd uuid-runtime
  docker.io apparmor busybox-static etcd-server etcd-client jq make curl ca-certificates)
VM_DISK_SIZE=4G

# What the image is made of: a change to any of these builds a new one.
vm_image_key() {
  {
    printf '%s\n' "$VM_SUITE" "${VM_PACKAGES[@]}" "$VM_DISK_SIZE"
    vm_debian_mirrors
    cat "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-16
}

# Per-boot setup, run by systemd before networking: address and hostname from the kernel command
# line (ovvm.ip=A/N ovvm.host=NAME, as vm-test boots it) or DHCP (libvirt/Vagrant through grub),
# the host's 9p share at /mnt/host, and on the very first boot the image's finalisation.
vm_guest_boot_script() {
  cat <<'EOF'
#!/bin/sh
ip=; host=
for a in $(cat /proc/cmdline); do
  case $a in
    ovvm.ip=*) ip=${a#*=} ;;
    ovvm.host=*) host=${a#*=} ;;
  esac
done
mkdir -p /etc/network/interfaces.d
if [ -n "$ip" ]; then
  printf 'auto eth0\niface eth0 inet static\n  address %s\n' "$ip" >/etc/network/interfaces.d/eth0
else
  printf 'auto eth0\niface eth0 inet dhcp\n' >/etc/network/interfaces.d/eth0
fi
if [ -n "$host" ]; then
  echo "$host" >/etc/hostname; echo "$host" >/proc/sys/kernel/hostname
  grep -q " $host\$" /etc/hosts || echo "127.0.1.1 $host" >>/etc/hosts
fi
# The host's 9p share (tag "host"), where the VM has one (vm-test's guests, not Vagrant's).
mkdir -p /mnt/host
modprobe 9pnet_virtio 2>/dev/null || true
mountpoint -q /mnt/host || mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /mnt/host 2>/dev/null || true
if [ -e /etc/ovvm-finalize ]; then
  if ( set -x; grub-install --target=i386-pc /dev/vda && update-grub ) >/dev/ttyS0 2>&1; then
    rm -f /etc/ovvm-finalize
    # Docker starts after the network, i.e. after this unit: queue the rest, do not wait.
    systemd-run --no-block --unit=ovvm-finalize -p After=docker.service -p Wants=docker.service \
      sh -c '/usr/local/sbin/ovvm-finalize >/dev/ttyS0 2>&1 && echo OVVM-FINALIZE-OK >/dev/ttyS0 || echo OVVM-FINALIZE-FAILED >/dev/ttyS0; systemctl poweroff'
  else
    echo OVVM-FINALIZE-FAILED >/dev/ttyS0
    systemctl --no-block poweroff
  fi
fi
EOF
}

vm_guest_unit() {
  cat <<'EOF'
[Unit]
Description=overlay-agent VM lane: address, hostname, 9p share
DefaultDependencies=no
After=local-fs.target systemd-modules-load.service
Before=networking.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/ovvm-guest

[Install]
WantedBy=multi-user.target
EOF
}

# First boot, after grub: busybox:stable from busybox-static, then forget what must differ per
# machine (OVS's system-id is generated at OVS's next start when its file is missing).
vm_guest_finalize() {
  cat <<'EOF'
#!/bin/sh
set -e
d=$(mktemp -d); mkdir -p "$d/bin" "$d/tmp" "$d/etc" "$d/www"
cp /bin/busybox "$d/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
# busybox:stable's wget takes -T SECONDS (the Vagrant demo's check uses it); Debian's
# busybox-static is built without FEATURE_WGET_TIMEOUT and crashes on -T: here -T N is `timeout N`.
rm "$d/bin/wget"
cat >"$d/bin/wget" <<'WGET'
#!/bin/sh
secs=; take=
for a do
  shift
  if [ -n "$take" ]; then secs=$a; take=; continue; fi
  case $a in
    -T) take=1 ;;
    -T*) secs=${a#-T} ;;
    *) set -- "$@" "$a" ;;
  esac
done
[ -z "$secs" ] || exec /bin/busybox timeout "$secs" /bin/busybox wget "$@"
exec /bin/busybox wget "$@"
WGET
chmod 755 "$d/bin/wget"
echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
tar -C "$d" -c . | docker import -c 'CMD ["sh"]' - busybox:stable
rm -rf "$d"
docker image ls
systemctl stop openvswitch-switch
rm -f /etc/openvswitch/system-id.conf /etc/openvswitch/conf.db /etc/openvswitch/.conf.db.~lock~
EOF
}

# vm_image: build (or find) the image for the current inputs; sets VM_IMG.
vm_image() {
  local key
  key=$(vm_image_key)
  VM_IMG=$VM_CACHE/img-$key
  if [ -s "$VM_IMG/base.qcow2" ] && [ -s "$VM_IMG/vmlinuz" ] && [ -s "$VM_IMG/initrd.img" ] && [ -s "$VM_IMG/id_ed25519" ]; then
    log "image $VM_IMG (cached; its inputs' key is $key)"
    return 0
  fi
  vm_deps
  mkdir -p "$VM_CACHE"
  # One build at a time; a second caller waits, then finds the image built.
  local lock
  exec {lock}>"$VM_CACHE/build.lock"
  flock "$lock"
  if [ -s "$VM_IMG/base.qcow2" ]; then flock -u "$lock"; log "image $VM_IMG (built meanwhile)"; return 0; fi
  local t0=$SECONDS work=$VM_CACHE/build-$key accel
  read -ra accel <<<"$(vm_accel_args)"
  rm -rf "$work" "$VM_IMG"
  mkdir -p "$work" "$VM_CACHE"
  ssh-keygen -q -t ed25519 -N '' -C overlay-agent-vm -f "$work/id_ed25519"

  local mirrors=() u s
  while read -r u s; do mirrors+=("deb $u $s main"); done < <(vm_debian_mirrors)
  ((${#mirrors[@]})) || die "no Debian $VM_SUITE source in /etc/apt/sources.list*"

  # Drop what a virtio guest never needs: docs, locales, most hardware drivers and file systems.
  local ex=() d
  for d in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' \
    '/usr/share/lintian/*'; do ex+=(--dpkgopt="path-exclude=$d"); done
  ex+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
  for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet drivers/infiniband \
    drivers/staging drivers/usb drivers/bluetooth drivers/iio drivers/isdn drivers/hid \
    drivers/net/can drivers/net/usb drivers/mmc drivers/mtd drivers/hwmon drivers/nfc \
    drivers/thunderbolt drivers/video drivers/atm drivers/firewire drivers/pcmcia drivers/target \
    drivers/gnss drivers/leds drivers/w1 drivers/spi drivers/power drivers/platform \
    drivers/scsi/qla2xxx drivers/scsi/lpfc drivers/scsi/bfa drivers/scsi/be2iscsi drivers/misc \
    drivers/net/wwan drivers/net/ieee802154 drivers/input/touchscreen drivers/input/misc sound \
    drivers/comedi fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/ceph fs/smb fs/nfs fs/nfsd fs/f2fs fs/jfs \
    fs/ubifs fs/nilfs2 fs/reiserfs fs/dlm fs/afs fs/orangefs \
    net/bluetooth net/wireless net/mac80211 net/nfc; do
    ex+=(--dpkgopt="path-exclude=/usr/lib/modules/*/kernel/$d/*" --dpkgopt="path-exclude=/lib/modules/*/kernel/$d/*")
  done

  export OVVM_GUEST_SCRIPT OVVM_GUEST_UNIT OVVM_FINALIZE OVVM_PUBKEY
  OVVM_GUEST_SCRIPT=$(vm_guest_boot_script); OVVM_GUEST_UNIT=$(vm_guest_unit)
  OVVM_FINALIZE=$(vm_guest_finalize); OVVM_PUBKEY=$(cat "$work/id_ed25519.pub")
  log "building the guest image: mmdebstrap $VM_SUITE, ${#VM_PACKAGES[@]} packages (log: $work/mmdebstrap.log)"
  # shellcheck disable=SC2016  # the hooks are expanded by mmdebstrap's shell, $1 is the rootfs
  mmdebstrap --variant=apt --include="$(IFS=,; echo "${VM_PACKAGES[*]}")" "${ex[@]}" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"
      printf "MODULES=list\nCOMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/ovvm"
      printf "%s\n" virtio_pci virtio_blk virtio_scsi sd_mod ext4 >"$1/usr/share/initramfs-tools/modules.d/ovvm"
      if [ -x "$1/usr/bin/debconf-set-selections" ]; then echo "grub-pc grub-pc/install_devices multiselect" | chroot "$1" debconf-set-selections; fi' \
    --customize-hook='set -e
      printf "%s\n" "$OVVM_GUEST_SCRIPT" >"$1/usr/local/sbin/ovvm-guest"; chmod 755 "$1/usr/local/sbin/ovvm-guest"
      printf "%s\n" "$OVVM_FINALIZE" >"$1/usr/local/sbin/ovvm-finalize"; chmod 755 "$1/usr/local/sbin/ovvm-finalize"
      printf "%s\n" "$OVVM_GUEST_UNIT" >"$1/etc/systemd/system/ovvm-guest.service"
      chroot "$1" systemctl enable ovvm-guest.service
      chroot "$1" systemctl disable etcd.service
      touch "$1/etc/ovvm-finalize"
      echo "LABEL=ovvmroot / ext4 errors=remount-ro 0 1" >"$1/etc/fstab"
      echo ovvm >"$1/etc/hostname"
      printf "127.0.0.1 localhost\n::1 localhost ip6-localhost\n" >"$1/etc/hosts"
      printf "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n" >"$1/etc/network/interfaces"
      mkdir -p -m 700 "$1/root/.ssh"; printf "%s\n" "$OVVM_PUBKEY" >"$1/root/.ssh/authorized_keys"
      chroot "$1" passwd -d root
      sed -i "s/^#\?GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0\"/; s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/" "$1/etc/default/grub"
      printf "%s\n" openvswitch vport_vxlan vport_gre veth >"$1/etc/modules-load.d/ovvm.conf"
      mkdir -p "$1/etc/docker"
      # Docker default bridge and pools inside the test range, never a private range.
      printf "{\"bip\": \"198.18.250.1/24\", \"default-address-pools\": [{\"base\": \"198.18.248.0/22\", \"size\": 24}]}\n" >"$1/etc/docker/daemon.json"
      chroot "$1" useradd -m -s /bin/bash -G sudo vagrant
      echo "vagrant:vagrant" | chroot "$1" chpasswd
      echo "vagrant ALL=(ALL) NOPASSWD: ALL" >"$1/etc/sudoers.d/vagrant"; chmod 440 "$1/etc/sudoers.d/vagrant"
      mkdir -p -m 700 "$1/home/vagrant/.ssh"; printf "%s\n" "$OVVM_PUBKEY" >"$1/home/vagrant/.ssh/authorized_keys"
      chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh
      rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"
      rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*_Packages*' \
    "$VM_SUITE" "$work/rootfs" "${mirrors[@]}" >"$work/mmdebstrap.log" 2>&1 ||
    { tail -30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $work/mmdebstrap.log)"; }
  log "rootfs built in $((SECONDS - t0)) s: $(du -sh "$work/rootfs" | cut -f1)"

  cp -L "$work/rootfs/vmlinuz" "$work/vmlinuz"; cp -L "$work/rootfs/initrd.img" "$work/initrd.img"
  # Disk: MBR, one bootable partition at 1 MiB, ext4 filled from the directory (no loop mount).
  local raw=$work/disk.raw bytes
  truncate -s "$VM_DISK_SIZE" "$raw"; bytes=$(stat -c %s "$raw")
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
  mke2fs -q -t ext4 -L ovvmroot -O ^metadata_csum_seed,^orphan_file -E offset=1048576 -d "$work/rootfs" \
    "$raw" $(((bytes - 1048576) / 1024))k
  rm -rf "$work/rootfs"

  log "first boot: grub-install, busybox:stable, then power off (console: $work/finalize.console)"
  timeout 900 qemu-system-x86_64 -machine q35 "${accel[@]}" -smp 2 -m 1024 -nodefaults \
    -no-user-config -display none -serial "file:$work/finalize.console" -no-reboot \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "root=LABEL=ovvmroot rw console=ttyS0 net.ifnames=0 panic=-1" \
    -drive "file=$raw,if=virtio,format=raw" -device virtio-rng-pci \
    -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 || die "first boot failed (console: $work/finalize.console)"
  grep -q OVVM-FINALIZE-OK "$work/finalize.console" ||
    { tail -40 "$work/finalize.console" >&2; die "first boot did not finish (console: $work/finalize.console)"; }
  qemu-img convert -O qcow2 "$raw" "$work/base.qcow2"
  rm -f "$raw"
  mv "$work" "$VM_IMG"
  # Older images (other inputs) are not used again.
  local old
  for old in "$VM_CACHE"/img-* "$VM_CACHE"/build-*; do
    [ "$old" = "$VM_IMG" ] || [ ! -d "$old" ] || rm -rf "$old"
  done
  flock -u "$lock"
  log "image $VM_IMG: $(du -h "$VM_IMG/base.qcow2" | cut -f1), built in $((SECONDS - t0)) s"
}
