#!/usr/bin/env bash
# The ovault layer of build.sh, run on the extracted Debian base: $1 is the root, $2 the
# root filesystem's UUID.
# Installs ovault into /opt/ovault/.venv from the wheels in $1/tmp/wheels, the units of
# deploy/systemd unchanged (plus an appliance drop-in), first boot, network, GRUB config.
set -euo pipefail
R=$1 UUID=$2
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
F=$HERE/files
ch() { chroot "$R" "$@"; }

# ovault: a venv of Debian's python3 with the pinned wheels only (no index, no compilers).
# Its .pyc files are written with SOURCE_DATE_EPOCH set (build.sh exports it), so Python
# makes them "checked-hash" pycs: the source's hash instead of its time, the same bytes
# at every build.
ch python3 -m venv /opt/ovault/.venv
ch env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL /opt/ovault/.venv/bin/pip install -q --no-index --find-links /tmp/wheels --no-cache-dir -r /tmp/wheels/requirements.txt
rm -rf "$R/tmp/wheels"
ch useradd --system --user-group --home-dir /var/lib/ovault --no-create-home \
  --shell /usr/sbin/nologin --comment "ovault orchestrator" ovault
install -d -m 0750 -g "$(ch getent group ovault | cut -d: -f3)" "$R/etc/ovault"

# Units: deploy/systemd's as they are, the appliance's additions beside them.
install -m 0644 "$REPO/deploy/systemd/ovault.service" "$R/etc/systemd/system/ovault.service"
install -d "$R/etc/systemd/system/ovault.service.d"
install -m 0644 "$F/ovault-appliance.conf" "$R/etc/systemd/system/ovault.service.d/appliance.conf"
install -m 0644 "$F/ovault-firstboot.service" "$F/ovault-console-hint.service" "$F/ovault-growroot.service" "$R/etc/systemd/system/"
install -m 0755 "$F/ovault-firstboot" "$F/ovault-console-hint" "$F/ovault-growroot" "$R/usr/local/sbin/"
install -m 0644 "$F/20-wired-dhcp.network" "$R/etc/systemd/network/"
install -m 0644 "$F/issue" "$R/etc/issue"
systemctl --root="$R" enable -q ovault.service ovault-firstboot.service ovault-console-hint.service ovault-growroot.service \
  systemd-networkd.service systemd-resolved.service
# Debian's own PostgreSQL cluster service is not used: ovault runs its embedded cluster.
systemctl --root="$R" disable -q postgresql.service 2>/dev/null || true
systemctl --root="$R" mask -q systemd-networkd-wait-online.service

# Identity and boot.
echo ovault > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tovault\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
printf 'UUID=%s / ext4 defaults,errors=remount-ro 0 1\n' "$UUID" > "$R/etc/fstab"
: > "$R/etc/machine-id"                      # systemd makes one at first boot
rm -f "$R"/etc/ssh/ssh_host_*                # ovault-firstboot makes them (ssh-keygen -A)
# No key is shared by every appliance: ssl-cert's snakeoil pair (made when the base was built;
# nothing in the appliance uses it) goes too. ovault makes its own TLS certificate at its
# first start (listen.tls = "auto"), the first admin token as well.
rm -f "$R/etc/ssl/private/ssl-cert-snakeoil.key" "$R/etc/ssl/certs/ssl-cert-snakeoil.pem"
find "$R/etc/ssl/certs" -lname '*ssl-cert-snakeoil*' -delete
# root: no password, to be chosen at the first console login (oVirt's console is an
# administrator's); SSH never accepts an empty password; a seed may add SSH keys.
ch passwd -q -d root
ch chage -d 0 root
kver=$(basename "$(ls "$R"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
install -d "$R/boot/grub"
cat > "$R/boot/grub/grub.cfg" <<CFG
set timeout=2
menuentry "ovault appliance (Debian 12, $kver)" {
  linux /boot/vmlinuz-$kver root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8 no_timer_check net.ifnames=1
  initrd /boot/initrd.img-$kver
}
CFG

# Smaller: package lists and caches (apt-get update brings them back).
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/debconf/*-old \
  "$R"/var/log/*.log "$R"/var/log/apt/* "$R"/root/.cache
find "$R/opt/ovault/.venv" -name '__pycache__' -path '*/pip/*' -prune -exec rm -rf {} +
