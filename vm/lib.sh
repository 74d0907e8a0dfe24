# shellcheck shell=bash
# Shared by vm/vm-test.sh and vm/vagrant.sh: host dependencies, the accelerator, the cached guest
# image (vm/image.sh) and a few guests on a Linux bridge of this host, reached over ssh.
# Sourced, never run. Every name here (bridge, taps, run dir, addresses) is this lane's own, so
# nothing collides with `make test`'s or the demo's namespaces and links.

# shellcheck disable=SC2034  # used by the scripts that source this file
VM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Images live outside the checkout, keyed on their inputs (vm/image.sh): a fresh clone reuses
# them, and a changed package list or build script builds a new one.
VM_CACHE=${OVERLAY_VM_CACHE:-/var/cache/overlay-agent-vm}
VM_SUITE=bookworm

log() { printf '[vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- dependencies ----------------------------------------------------------------------------

vm_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# "URI SUITE" for each Debian source of this host (deb822 or one-line), e.g.
# "http://deb.debian.org/debian bookworm": the only place packages come from.
vm_debian_mirrors() {
  {
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | awk '
      /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) s[i]=$i; n=NF}
      /^$/ {if (u!="") for (i=2;i<=n;i++) print u, s[i]; u=""; n=0}
      END {if (u!="") for (i=2;i<=n;i++) print u, s[i]}'
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
      awk '$1=="deb" {u=$2; s=$3; if ($2 ~ /^\[/) {u=$3; s=$4}; print u, s}'
  } | awk -v suite="$VM_SUITE" '$2 ~ "^" suite "(-updates|-security)?$" && $1 ~ /debian/' | sort -u
}

vm_apt_install() {  # vm_apt_install PKG...: the missing ones, from this host's Debian sources
  local missing=() p
  for p in "$@"; do vm_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" = 0 ] || die "run as root, or apt-get install ${missing[*]}"
  log "installing ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
}

# qemu-system-x86_64. A qemu-utils from bookworm-backports (as this kind of machine ships) breaks
# bookworm's qemu-system 7.2, so qemu-system then comes from backports too, through a private
# apt state: the host's sources and lists stay as they are.
vm_install_qemu() {
  if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then return 0; fi
  local qv B O
  qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ $qv == *bpo* ]]; then
    log "qemu-utils $qv is from $VM_SUITE-backports: installing qemu-system-x86 from there too"
    B=$VM_CACHE/apt-bpo
    mkdir -p "$B/lists/partial" "$B/archives/partial"
    vm_debian_mirrors | awk '{print "deb " $1 " " $2 " main"}' >"$B/sources.list"
    echo "deb $(vm_debian_mirrors | awk -v s="$VM_SUITE" '$2==s {print $1; exit}') $VM_SUITE-backports main" >>"$B/sources.list"
    O=(-o Dir::Etc::sourcelist="$B/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::lists="$B/lists"
      -o Dir::Cache::archives="$B/archives" -o APT::Sandbox::User=root)
    apt-get "${O[@]}" update -qq || die "apt-get update of $VM_SUITE-backports failed"
    DEBIAN_FRONTEND=noninteractive apt-get "${O[@]}" install -y -qq --no-install-recommends \
      -t "$VM_SUITE-backports" qemu-system-x86 qemu-system-common qemu-system-data >/dev/null ||
      die "apt-get install qemu-system-x86 (from $VM_SUITE-backports) failed"
  else
    vm_apt_install qemu-system-x86 qemu-utils
  fi
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing after install"
}

# Everything vm-test needs on the host (vagrant.sh adds its own).
vm_deps() {
  vm_apt_install mmdebstrap e2fsprogs fdisk iproute2 openssh-client python3 etcd-server etcd-client \
    jq seabios ipxe-qemu
  vm_install_qemu
}

# ---- accelerator -----------------------------------------------------------------------------
# KVM where /dev/kvm is real KVM (kvm_intel or kvm_amd). This kind of machine's /dev/kvm is PVM
# (kvm_pvm: nested virtualisation without VT-x) which only runs PVM-enlightened guest kernels:
# a stock Debian kernel never leaves its decompressor there. Then TCG (software emulation).
# OVERLAY_VM_ACCEL=kvm|tcg overrides.
vm_accel() {
  if [ -n "${OVERLAY_VM_ACCEL:-}" ]; then echo "$OVERLAY_VM_ACCEL"; return; fi
  if [ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    echo kvm
  else
    echo tcg
  fi
}
vm_accel_args() {  # qemu flags for vm_accel
  case $(vm_accel) in
    kvm) echo "-accel kvm -cpu host" ;;
    tcg) echo "-accel tcg,thread=multi,tb-size=256 -cpu max" ;;
    *) die "OVERLAY_VM_ACCEL must be kvm or tcg" ;;
  esac
}
vm_accel_why() {
  if [ -d /sys/module/kvm_pvm ]; then echo "tcg: /dev/kvm is PVM (kvm_pvm), which cannot boot a stock kernel"
  elif [ "$(vm_accel)" = kvm ]; then echo "kvm"
  else echo "tcg: no real KVM (/dev/kvm with kvm_intel or kvm_amd)"; fi
}

# ---- guests on a bridge ----------------------------------------------------------------------
# Set before use: VM_RUN (run dir), VM_BRIDGE, VM_TAP (tap prefix), VM_NET (a.b.c), VM_IMG (image
# dir from vm_image), VM_MEM, VM_SHARE (9p share dir, /mnt/host in the guests).

vm_ip() { echo "$VM_NET.$((10 + $1))"; }
vm_host_ip() { echo "$VM_NET.1"; }

# One ssh connection per guest, reused (a key exchange costs about a second under TCG).
vm_ssh_opts() {
  printf '%s\n' -i "$VM_IMG/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=6 \
    -o ControlMaster=auto -o "ControlPath=$VM_RUN/ssh-%C" -o ControlPersist=120
}
vm_ssh() {  # vm_ssh I CMD...: run CMD as root in guest I
  local i=$1 opts
  shift
  mapfile -t opts < <(vm_ssh_opts)
  # (the caller's lock, VM_LOCK_FD, must not outlive it in a persisting ssh master)
  if [ -n "${VM_LOCK_FD:-}" ]; then
    # shellcheck disable=SC2029  # the command is meant to be expanded here, run there
    ssh "${opts[@]}" "root@$(vm_ip "$i")" "$@" {VM_LOCK_FD}>&-
  else
    # shellcheck disable=SC2029
    ssh "${opts[@]}" "root@$(vm_ip "$i")" "$@"
  fi
}

vm_alive() {  # guest I's qemu runs
  local pid
  [ -s "$VM_RUN/vm$1.pid" ] || return 1
  pid=$(cat "$VM_RUN/vm$1.pid")
  [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] &&
    grep -qa qemu "/proc/$pid/cmdline" 2>/dev/null
}

vm_boot() {  # vm_boot I: start guest I (fresh copy-on-write overlay on the image), do not wait
  local i=$1 ip tap vhost=off accel
  ip=$(vm_ip "$i")
  # shellcheck disable=SC2153  # VM_TAP is set by the caller, as the comment above says
  tap=$VM_TAP$i
  [ -c /dev/vhost-net ] && vhost=on
  read -ra accel <<<"$(vm_accel_args)"
  ip tuntap add dev "$tap" mode tap
  ip link set "$tap" master "$VM_BRIDGE" up
  qemu-img create -q -f qcow2 -F qcow2 -b "$VM_IMG/base.qcow2" "$VM_RUN/vm$i.qcow2"
  # The caller's lock (VM_LOCK_FD) stays with the caller: a guest must not hold it.
  (if [ -n "${VM_LOCK_FD:-}" ]; then exec {VM_LOCK_FD}>&-; fi
  exec qemu-system-x86_64 -name "ovvm$i" -machine q35 "${accel[@]}" -smp 1 -m "$VM_MEM" \
    -nodefaults -no-user-config -display none \
    -kernel "$VM_IMG/vmlinuz" -initrd "$VM_IMG/initrd.img" \
    -append "root=LABEL=ovvmroot rw console=ttyS0 net.ifnames=0 quiet ovvm.ip=$ip/24 ovvm.host=vm$i" \
    -drive "file=$VM_RUN/vm$i.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=$vhost" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:$(printf %02x "${VM_NET##*.}"):00:$(printf %02x "$i")" \
    -virtfs "local,path=$VM_SHARE,mount_tag=host,security_model=none,readonly=on,id=host" \
    -device virtio-rng-pci \
    -serial "file:$VM_RUN/vm$i.console" \
    -pidfile "$VM_RUN/vm$i.pid" -daemonize) ||
    die "qemu for vm$i did not start"
}

vm_wait_ssh() {  # vm_wait_ssh I SECONDS
  local i=$1 deadline=$((SECONDS + $2))
  until vm_ssh "$i" true 2>/dev/null; do
    vm_alive "$i" || { tail -20 "$VM_RUN/vm$i.console" >&2; die "vm$i: qemu exited (console: $VM_RUN/vm$i.console)"; }
    ((SECONDS < deadline)) || { tail -20 "$VM_RUN/vm$i.console" >&2; die "vm$i: no ssh after $2 s (console: $VM_RUN/vm$i.console)"; }
    sleep 1
  done
}

vm_net_up() {
  ip link add "$VM_BRIDGE" type bridge
  ip addr add "$(vm_host_ip)/24" dev "$VM_BRIDGE"
  ip link set "$VM_BRIDGE" up
}

vm_kill_all() {  # every guest of VM_RUN, its taps and the bridge; safe to call any time
  local f pid n pids=()
  for f in "$VM_RUN"/ssh-*; do
    if [ -S "$f" ]; then ssh -o "ControlPath=$f" -O exit none >/dev/null 2>&1 || true; fi
  done
  # qemu removes its pidfile as it exits: read them all first, and tolerate any gone meanwhile.
  for f in "$VM_RUN"/vm*.pid; do
    pid=$(cat "$f" 2>/dev/null) || continue
    if grep -qa qemu "/proc/$pid/cmdline" 2>/dev/null; then pids+=("$pid"); fi
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do grep -qa qemu "/proc/$pid/cmdline" 2>/dev/null || break; sleep 0.1; done
    if grep -qa qemu "/proc/$pid/cmdline" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -f "$VM_RUN"/vm*.pid
  for f in /sys/class/net/"$VM_TAP"*; do
    [ -e "$f" ] || continue
    n=${f##*/}
    ip link del "$n" 2>/dev/null || true
  done
  if ip link show "$VM_BRIDGE" >/dev/null 2>&1; then ip link del "$VM_BRIDGE"; fi
}
