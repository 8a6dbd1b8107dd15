#!/bin/busybox sh
# /init of the boot test's initramfs: Debian's kernel has NFS, sunrpc and virtio-net as modules
# and no built-in NFS root, so this loads them, brings up the NIC and mounts the root over NFSv3.
# It reads the kernel's usual parameters, so the same command line works with initramfs-tools:
#   ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>
#   nfsroot=[<server>:]<path>[,<options>]     init=<program on the root> (default /sbin/init)
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The kernel found no /dev/console in the archive to give us, so this shell starts without
# stdin/stdout/stderr; everything it and its tools say goes to the console from here on.
exec </dev/console >/dev/console 2>&1
say() { echo "initramfs: $*"; }
fail() { say "$*"; echo o >/proc/sysrq-trigger; sleep 30; }

for m in $(cat /modules.order); do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done

ipconf= nfsroot= init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case $arg in
    ip=*) ipconf=${arg#ip=} ;;
    nfsroot=*) nfsroot=${arg#nfsroot=} ;;
    init=*) init=${arg#init=} ;;
  esac
done
IFS=: read -r client server gw netmask hostname dev autoconf <<IP
$ipconf
IP
dev=${dev:-eth0}
[ -n "$client" ] || fail "no ip=<client>:<server>:... on the kernel command line"

n=0
while [ ! -e "/sys/class/net/$dev" ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fail "no network device $dev"
  sleep 0.1
done
ifconfig lo 127.0.0.1 up
ifconfig "$dev" "$client" netmask "${netmask:-255.255.255.0}" up
[ -n "$gw" ] && route add default gw "$gw"

# nfsroot=[server:]path[,options]; busybox hands the options to the kernel as text, and the
# kernel's text parser needs the server's address as addr=.
path=${nfsroot%%,*}
opts=
case $nfsroot in *,*) opts=${nfsroot#*,} ;; esac
case $path in *:*) server=${path%%:*}; path=${path#*:} ;; esac
[ -n "$server" ] || fail "no NFS server in ip= or nfsroot="
mntopts="nolock,addr=$server${opts:+,$opts}"
say "mounting $server:$path with $mntopts"
n=0
until mount -t nfs -o "$mntopts" "$server:$path" /newroot; do
  n=$((n + 1)); [ $n -ge 5 ] && fail "mount of $server:$path failed"
  sleep 1
done
say "root mounted: $(grep ' /newroot ' /proc/mounts)"

mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
