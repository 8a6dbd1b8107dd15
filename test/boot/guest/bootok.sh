#!/bin/sh
# Run by cnfs-bootok.service once multi-user.target is reached: report the boot's state on the
# serial console for the test, then shut down the normal way.
exec >/dev/console 2>&1
failed=$(systemctl --failed --no-legend --plain --no-pager)
echo "CNFS-FAILED-UNITS=$(printf '%s' "$failed" | grep -c .)"
[ -n "$failed" ] && printf '%s\n' "$failed" | sed 's/^/CNFS-FAILED: /'
echo "CNFS-MULTI-USER=$(systemctl is-active multi-user.target)"
echo "CNFS-HOSTNAME=$(cat /etc/hostname)"
echo "CNFS-MACHINE-ID=$(cat /etc/machine-id)"
echo "CNFS-ROOT=$(awk '$2 == "/" { print $4 }' /proc/mounts)"
echo "CNFS-BOOTOK"
systemctl poweroff --no-block
