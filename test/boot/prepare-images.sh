#!/usr/bin/env bash
# Builds, once, what the real-boot test needs and caches it outside the repository, because a
# debootstrap and a kernel download take minutes and a rerun should take seconds:
#   $CACHE/kernel-$KERNEL_KEY/    Debian's kernel package unpacked (vmlinuz + modules)
#   $CACHE/root-$ROOT_KEY/tree    a minimal Debian bookworm tree with systemd (debootstrap minbase)
#   $CACHE/root-$ROOT_KEY/initrd-tools.img  the tree's own initramfs-tools initramfs (BOOT=nfs)
#   $CACHE/initrd-$INITRD_KEY.img a busybox initramfs that mounts the root over NFSv3
# Each part is built in a temporary directory next to its final place and renamed into place
# only when complete, so an interrupted build is never used. Keys change when what goes into a
# part changes. Prints KEY=VALUE lines (paths, timings) on stdout for the test.
set -euo pipefail

CACHE=${1:?usage: prepare-images.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm
# systemd's first boot to multi-user.target without failed units needs kmod (kmod-static-nodes);
# procps and iproute2 make the console checks readable; initramfs-tools is how Debian nodes
# usually mount an NFS root (klibc's nfsmount), and the test boots one node with it.
PACKAGES=systemd,systemd-sysv,udev,kmod,procps,iproute2,initramfs-tools
# Bump when the way the root is made changes in a way the package list does not show.
ROOT_VERSION=1

mkdir -p "$CACHE"
log() { echo "prepare-images: $*" >&2; }
# Leftovers of interrupted builds (never used, as they were never renamed into place).
find "$CACHE" -mindepth 1 -maxdepth 1 -name '.*' -mmin +120 -exec rm -rf {} +
# Puts a finished part in place; when a concurrent run got there first, its copy is as good.
publish() { mv -T "$1" "$2" 2>/dev/null || { [ -d "$2" ] && rm -rf "$1"; }; }

# The Debian archive apt uses on this machine (deb822 .sources first, then one-line lists); the
# test never names a mirror itself.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1; exit } types = suites = uri = "" }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uri = u[1] }
      END { if (!found) flush() }' "$f"
  done | head -n1 | grep . && return 0
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { if ($(i + 1) == suite) { print $i; exit } else break } }' |
    head -n1 | grep .
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- kernel --------------------------------------------------------------------------------------
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel_pkg" ] || { log "apt does not know linux-image-amd64 (apt-get update?)"; exit 1; }
kernel_ver=$(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ { print $2 }')
kernel_key=$(printf '%s %s' "$kernel_pkg" "$kernel_ver" | sha256sum | cut -c1-12)
kernel_dir=$CACHE/kernel-$kernel_key
if [ ! -d "$kernel_dir" ]; then
  t=$(now)
  tmp=$(mktemp -d "$CACHE/.kernel-$kernel_key.XXXXXX")
  log "apt-get download $kernel_pkg $kernel_ver"
  (cd "$tmp" && apt-get download -q "$kernel_pkg" >&2 2>/dev/null) ||
    (cd "$tmp" && apt-get download "$kernel_pkg" >&2)
  dpkg -x "$tmp"/"$kernel_pkg"_*.deb "$tmp/pkg"
  rm -f "$tmp"/*.deb
  # The package leaves modules.dep to its postinst (depmod); busybox's depmod writes it here.
  busybox depmod -b "$tmp/pkg" "$(ls "$tmp/pkg/lib/modules")"
  echo "seconds_kernel=$(elapsed "$t")" >"$tmp/build-times"
  publish "$tmp" "$kernel_dir"
  log "kernel ready in $(elapsed "$t") s"
fi
release=$(ls "$kernel_dir/pkg/lib/modules" | head -n1)
vmlinuz=$kernel_dir/pkg/boot/vmlinuz-$release

# ---- root tree -------------------------------------------------------------------------------
root_key=$(printf '%s\n' "$ROOT_VERSION" "$SUITE" "$PACKAGES" "$kernel_key" | sha256sum | cut -c1-12)
root_dir=$CACHE/root-$root_key
if [ ! -d "$root_dir" ]; then
  mirror=$(debian_mirror) || { log "no Debian $SUITE source found in apt's configuration"; exit 1; }
  t=$(now)
  t_root=$t
  tmp=$(mktemp -d "$CACHE/.root-$root_key.XXXXXX")
  log "debootstrap $SUITE (minbase + $PACKAGES) into $tmp"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp/tree" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; exit 1; }
  rm -f "$tmp.log"
  # Nothing a node must not share: no apt caches (they only make the copy per test run slower).
  rm -rf "$tmp"/tree/var/cache/apt/*.bin "$tmp"/tree/var/cache/apt/archives/*.deb "$tmp"/tree/var/lib/apt/lists/*_*
  # systemd-update-done and ldconfig.service run when /usr is newer than /etc/.updated; on a
  # shared root they would rewrite master files, so the image counts as updated.
  for d in etc var; do touch -r "$tmp/tree/usr" "$tmp/tree/$d/.updated"; done
  echo "seconds_debootstrap=$(elapsed "$t")" >"$tmp/build-times"
  # initramfs-tools' own initramfs for this kernel, made inside the tree as on a real node image
  # (MODULES=netboot: all NIC drivers). The kernel's modules are in the tree only meanwhile
  # (hard links; depmod replaces its files by rename), as nodes load nothing else from the root.
  t=$(now)
  cp -al "$kernel_dir/pkg/lib/modules" "$tmp/tree/lib/modules"
  mkdir -p "$tmp/tree/boot"
  cp "$kernel_dir/pkg/boot/config-$release" "$tmp/tree/boot/"
  sed -i 's/^MODULES=.*/MODULES=netboot/' "$tmp/tree/etc/initramfs-tools/initramfs.conf"
  unshare -m --propagation private sh -c '
    mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && mount -t sysfs sysfs "$1/sys" &&
    chroot "$1" depmod -a "$2" && chroot "$1" mkinitramfs -o /initrd-tools.img "$2"' sh "$tmp/tree" "$release" >"$tmp.log" 2>&1 ||
    { tail -n 30 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; exit 1; }
  rm -f "$tmp.log"
  mv "$tmp/tree/initrd-tools.img" "$tmp/initrd-tools.img"
  rm -rf "$tmp/tree/lib/modules" "$tmp/tree/boot/config-$release"
  echo "seconds_mkinitramfs=$(elapsed "$t")" >>"$tmp/build-times"
  publish "$tmp" "$root_dir"
  log "root and its initramfs-tools initramfs ready in $(elapsed "$t_root") s"
fi

# ---- initramfs ------------------------------------------------------------------------------------
initrd_key=$(cat "$here/initramfs-init.sh" "$0" /bin/busybox | sha256sum | cut -c1-12)
initrd=$CACHE/initrd-$kernel_key-$initrd_key.img
if [ ! -f "$initrd" ]; then
  t=$(now)
  tmp=$(mktemp -d "$CACHE/.initrd.XXXXXX")
  moddir=$kernel_dir/pkg/lib/modules/$release
  mkdir -p "$tmp/bin" "$tmp/lib/modules" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/newroot"
  cp /bin/busybox "$tmp/bin/busybox"
  install -m 0755 "$here/initramfs-init.sh" "$tmp/init"
  # The modules a virtio NIC and an NFSv3 root need, dependencies first, as modules.dep says
  # (it lists each module's dependencies; loading them in reverse order satisfies each in turn).
  # Built-in ones (modules.builtin) need nothing.
  want="virtio_pci virtio_net nfsv3"
  : >"$tmp/modules.order"
  add_module() {
    local name=$1 line path deps d
    path=$(awk -F: -v n="$name" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f); gsub(/-/, "_", f); if (f == n) { print $1; exit } }' "$moddir/modules.dep")
    if [ -z "$path" ]; then
      grep -q "/$name.ko" "$moddir/modules.builtin" || { log "module $name neither in modules.dep nor built in"; exit 1; }
      return 0
    fi
    grep -qx "$(basename "$path")" "$tmp/modules.order" && return 0
    deps=$(awk -F': ' -v p="$path" '$1 == p { print $2 }' "$moddir/modules.dep")
    for d in $(echo "$deps" | tr ' ' '\n' | tac); do
      d=$(basename "$d"); d=${d%%.ko*}; add_module "${d//-/_}"
    done
    case $path in
      *.ko) cp "$moddir/$path" "$tmp/lib/modules/" ;;
      *.ko.xz) xz -dc "$moddir/$path" >"$tmp/lib/modules/$(basename "${path%.xz}")" ;;
      *) log "unknown module format $path"; exit 1 ;;
    esac
    basename "${path%.xz}" >>"$tmp/modules.order"
  }
  for m in $want; do add_module "$m"; done
  log "initramfs modules: $(tr '\n' ' ' <"$tmp/modules.order")"
  (cd "$tmp" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$tmp.img")
  rm -rf "$tmp"
  mv "$tmp.img" "$initrd"
  log "initramfs ready in $(elapsed "$t") s"
fi

echo "ROOT=$root_dir/tree"
echo "VMLINUZ=$vmlinuz"
echo "INITRD=$initrd"
echo "INITRD_TOOLS=$root_dir/initrd-tools.img"
echo "KERNEL_RELEASE=$release"
cat "$kernel_dir/build-times" "$root_dir/build-times"
