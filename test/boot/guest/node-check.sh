#!/bin/sh
# init= of the four-node boot (runs as PID 1 straight after the initramfs): report on the serial
# console what this node sees of the shared root, write its own files, power off. The test reads
# the CNFS-* lines and then looks at the server's disk.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -e /proc/mounts ] || mount -t proc proc /proc
ip=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^ip=\([^:]*\):.*/\1/p')
host=$(cat /etc/hostname)
echo "CNFS-HOSTNAME=$host"
echo "CNFS-ROOT=$(awk '$2 == "/" { print $4 }' /proc/mounts)"
# var/log/cnfs holds a $$CREATE=IP$$ marker: this new file becomes this node's variant.
echo "$host booted from $ip" >/var/log/cnfs/boot.txt && echo "CNFS-CREATED=$(cat /var/log/cnfs/boot.txt)"
# var/lib/cnfs holds a $$COW=IP$$ marker: the first change copies the shared file for this node.
echo "$host" >>/var/lib/cnfs/state && echo "CNFS-COW=$(tr '\n' ' ' </var/lib/cnfs/state)"
sync
echo "CNFS-NODE-DONE ip=$ip"
# Power off from this process, synchronously. With sysrq the kernel powers off from a worker
# while this shell goes on, and its next PATH lookup over NFS raced the NIC's shutdown: the one
# vCPU spun in virtio-net's transmit path and the guest never powered off (seen in CI).
exec systemctl poweroff --force --force
