#!/usr/bin/env bash
# Builds build/ovault-appliance.qcow2 (and .ova): a Debian 12 root (mmdebstrap) with a kernel,
# systemd, PostgreSQL, ovault in a venv (its wheel + runtime dependencies pinned by
# requirements.lock), deploy/systemd's units, a serial console and GRUB (BIOS/MBR).
# No loop devices: the root filesystem is made with `mkfs.ext4 -d`, the disk is
# assembled with sfdisk + dd, and GRUB's boot.img + core.img are written with dd.
# Two cached layers under $OVAULT_APPLIANCE_CACHE:
# - base-<key>/debian-root.tar: mmdebstrap's Debian root (packages, dpkg/apt options, the
#   essential hook), nothing of ovault; key = sha256 of mmdebstrap's version and its whole
#   command line (package list, options, hook, mirror URLs). Rebuilt only when those change.
# - <key>/: the image; key = sha256 of every input file (product sources, deploy/appliance,
#   deploy/systemd, the lock). On a miss the base tarball is extracted, the wheels are
#   copied in, customize.sh runs in a chroot (proc, sysfs and devpts mounted, always
#   unmounted by the exit trap), then mmdebstrap's own final cleanup is repeated, and the
#   disk is assembled. A second run with unchanged inputs only copies the image.
# The ovault layer is byte-reproducible (SOURCE_DATE_EPOCH, deploy/appliance/repro.py);
# `build.sh --check-reproducible` builds it twice and compares; `--print-keys` prints the
# keys. Each run prunes the cache to the base in use and the 2 images used last.
# docs/appliance.md describes it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
CACHE=${OVAULT_APPLIANCE_CACHE:-/var/cache/ovault-appliance}
OUT=${OVAULT_APPLIANCE_OUT:-build/ovault-appliance.qcow2}
OVA=${OUT%.qcow2}.ova                              # the same disk as an OVA (deploy/appliance/ova.py)
DISK_SIZE_MIB=${OVAULT_APPLIANCE_DISK_MIB:-8192}   # virtual size; the qcow2 holds only what is used
ROOT_UUID=0b5e7a11-0a11-4c0e-9a11-0a11a1ce0001     # fixed: reproducible images, root=UUID= in grub.cfg
T0=$(date +%s)

# ---- host tools (idempotent, like scripts/setup.sh) ----
need=(mmdebstrap fdisk grub-pc-bin grub-common e2fsprogs qemu-utils python3-venv)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "appliance: installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- the cache key: every input of the image ----
INPUT_PATHS=(orchestrator statemachines imageio_ext deploy/systemd deploy/appliance requirements.lock pyproject.toml README.md)
inputs() {
  if git rev-parse --show-toplevel 2>/dev/null | grep -qxF "$ROOT"; then
    git ls-files -co --exclude-standard -- "${INPUT_PATHS[@]}"
  else   # a snapshot of the inputs (--check-reproducible): every file in it
    find "${INPUT_PATHS[@]}" \( -type f -o -type l \) 2>/dev/null
  fi | LC_ALL=C sort | while read -r f; do [[ -f $f ]] && echo "$f"; done
}
KEY=$(inputs | tr '\n' '\0' | xargs -0 sha256sum | sha256sum | cut -c1-16)
# SOURCE_DATE_EPOCH: the commit time of the last commit that changed an input (not HEAD's:
# unrelated commits leave it, and the image, unchanged). Every file time in the image, the
# filesystem's times and the OVA's member times are clamped to it.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct -- "${INPUT_PATHS[@]}" 2>/dev/null || true)
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# ---- the Debian base layer's key (the layer itself is made below, when missing) ----
# The mirrors apt already uses on this machine (deb822 .sources or one-line lists).
mirrors() {
  { awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
    awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; break}}' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; } | grep -E '/debian(-security)?/?$' || true
}
main=$(mirrors | grep -v -m1 security || true); main=${main:-http://deb.debian.org/debian}
sec=$(mirrors | grep -m1 security || true); sec=${sec:-http://deb.debian.org/debian-security}
PKGS=(
  linux-image-cloud-amd64 initramfs-tools systemd-sysv udev systemd-resolved dbus
  postgresql python3 python3-venv python3-yaml
  libcurl4 libxml2 libnfs13 ca-certificates openssh-server iproute2 less
  cloud-guest-utils fdisk e2fsprogs
)
# Everything that defines the base, and only that: its key is the sha256 of this command
# line and of mmdebstrap's version. (Its files are clamped to the SOURCE_DATE_EPOCH of the
# build that made it; the Debian packages are whatever the mirror served that day.)
BASE_ARGS=(
  --quiet --variant=minbase --format=tar
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/info/*' --aptopt='APT::Install-Recommends "false"' --include="$(IFS=,; echo "${PKGS[*]}")"
  --essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.conf"'
  bookworm
)
BASE_SOURCES=("deb $main bookworm main" "deb $main bookworm-updates main" "deb $sec bookworm-security main")
BASE_KEY=$( { mmdebstrap --version; printf '%s\0' "${BASE_ARGS[@]}" "${BASE_SOURCES[@]}"; } | sha256sum | cut -c1-16)
BASE=$CACHE/base-$BASE_KEY/debian-root.tar

if [[ ${1:-} == --print-keys ]]; then   # the two cache keys and the time (tests, scripts)
  echo "image=$KEY base=$BASE_KEY source_date_epoch=$SOURCE_DATE_EPOCH"
  exit 0
fi
if [[ ${1:-} == --check-reproducible ]]; then
  # The product layer twice from one snapshot of the inputs (the shared checkout may change
  # meanwhile), with the cached base, neither build reading or writing the image cache.
  SNAP=$(mktemp -d "$CACHE/repro-XXXXXX")
  trap 'rm -rf --one-file-system "$SNAP"' EXIT
  inputs | tar -cf - -T - | tar -xf - -C "$SNAP"
  ln -s "$ROOT/.venv" "$SNAP/.venv"
  declare -A qcow ova secs
  for run in a b; do
    t=$(date +%s)
    echo "appliance: reproducibility build $run (key $KEY, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH)"
    OVAULT_APPLIANCE_NOCACHE=1 OVAULT_APPLIANCE_OUT="$SNAP/out-$run/ovault-appliance.qcow2" \
      bash "$SNAP/deploy/appliance/build.sh"
    secs[$run]=$(( $(date +%s) - t ))
    qcow[$run]=$(sha256sum < "$SNAP/out-$run/ovault-appliance.qcow2" | cut -d' ' -f1)
    ova[$run]=$(sha256sum < "$SNAP/out-$run/ovault-appliance.ova" | cut -d' ' -f1)
  done
  for run in a b; do
    echo "appliance: build $run (${secs[$run]}s): qcow2 sha256 ${qcow[$run]}"
    echo "appliance: build $run (${secs[$run]}s): ova   sha256 ${ova[$run]}"
  done
  if [[ ${qcow[a]} == "${qcow[b]}" && ${ova[a]} == "${ova[b]}" ]]; then
    echo "appliance: reproducible: both builds gave identical qcow2 and OVA bytes"
    exit 0
  fi
  keep=$CACHE/repro-failed; rm -rf --one-file-system "$keep"; mkdir -p "$keep"
  mv "$SNAP/out-a" "$keep/a" && mv "$SNAP/out-b" "$keep/b"
  echo "appliance: NOT reproducible; both images kept in $keep (compare: qemu-img convert -O raw, cmp -l)" >&2
  exit 1
fi

IMG=$CACHE/$KEY/ovault-appliance.qcow2
NOCACHE=${OVAULT_APPLIANCE_NOCACHE:-0}   # 1: neither read nor write the image cache
KEEP=${OVAULT_APPLIANCE_KEEP:-2}         # product images kept in the cache, by last use
mkdir -p "$(dirname "$OUT")"

# The cache keeps the base this build uses and the $KEEP images used last (this one among
# them); everything else goes (and the work directories of killed builds), and is named. A directory holding a *.tmp* file is being
# written by a concurrent build and is left alone.
prune() {
  local d n=0 removed=()
  busy() { compgen -G "$1/*.tmp*" >/dev/null; }
  for d in "$CACHE"/base-*; do
    [[ -d $d && $d != "$CACHE/base-$BASE_KEY" ]] && ! busy "$d" || continue
    rm -rf --one-file-system "$d"; removed+=("${d##*/}")
  done
  while read -r _ d; do
    n=$((n + 1))
    [[ ${d##*/} != "$KEY" ]] && ((n > KEEP)) && ! busy "$d" || continue
    rm -rf --one-file-system "$d"; removed+=("${d##*/}")
  done < <(for d in "$CACHE"/*; do
             [[ -d $d && ${d##*/} =~ ^[0-9a-f]{16}$ ]] || continue
             stat -c "%Y $d" "$d/last-used" 2>/dev/null || stat -c "%Y $d" "$d"
           done | sort -rn)
  # A work directory whose build was killed (its pid is gone), unless something is still
  # mounted in it (a build killed before its trap could unmount: left to the operator).
  for d in "$CACHE"/work-*.*; do
    [[ -d $d && ${d##*.} =~ ^[0-9]+$ ]] && ! kill -0 "${d##*.}" 2>/dev/null || continue
    if findmnt -rn -o TARGET | grep -q "^$d/"; then
      echo "appliance: $d has mounts inside, not removed" >&2; continue
    fi
    rm -rf --one-file-system "$d"; removed+=("${d##*/}")
  done
  # Snapshots of --check-reproducible runs that were killed (a live run is done in minutes).
  while read -r d; do
    rm -rf --one-file-system "$d"; removed+=("${d##*/}")
  done < <(find "$CACHE" -maxdepth 1 -type d -name 'repro-??????' -mmin +1440)
  if ((${#removed[@]})); then
    echo "appliance: cache pruned (kept base-$BASE_KEY and the $KEEP images used last): removed ${removed[*]}"
  fi
}
if [[ $NOCACHE != 1 && -f $IMG && -f ${IMG%.qcow2}.ova ]]; then
  touch "$CACHE/$KEY/last-used"
  cp --reflink=auto "$IMG" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  cp --reflink=auto "${IMG%.qcow2}.ova" "$OVA.tmp" && mv "$OVA.tmp" "$OVA"
  echo "appliance: $OUT and $OVA from the cache ($CACHE/$KEY, $(du -h --apparent-size "$OUT" | cut -f1))"
  prune
  exit 0
fi

WORK=$CACHE/work-$KEY.$$
rm -rf --one-file-system "$WORK"
mkdir -p "$WORK"
trap 'rm -rf --one-file-system "$WORK"' EXIT

# ---- ovault's wheel and its runtime dependencies (no test tooling) ----
echo "appliance: building the wheelhouse"
mkdir -p "$WORK/src" "$WORK/wheels"
inputs | grep -E '^(orchestrator|statemachines|imageio_ext)/|^(pyproject.toml|README.md)$' |
  grep -v -E '(^|/)(tests?|__pycache__)/' | tar -cf - -T - | tar -xf - -C "$WORK/src"
PIP=(.venv/bin/python -m pip)
[[ -x .venv/bin/python ]] || PIP=(python3 -m pip)
quiet() { "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; return 1; }; }   # output on failure only
quiet "${PIP[@]}" wheel -q --no-deps -w "$WORK/wheels" "$WORK/src"
quiet "${PIP[@]}" wheel -q -w "$WORK/wheels" -c requirements.lock "$WORK"/wheels/ovault-*.whl
printf '%s\n' ovault > "$WORK/wheels/requirements.txt"

# ---- the Debian base layer: mmdebstrap's root as a tarball, cached by its own inputs ----
if [[ -f $BASE ]]; then
  echo "appliance: Debian base from the cache ($CACHE/base-$BASE_KEY)"
else
  echo "appliance: mmdebstrap bookworm from $main (base $BASE_KEY)"
  mkdir -p "${BASE%/*}"
  # Written under a temporary name, renamed when complete (a concurrent build, a failure).
  TMPDIR=$WORK mmdebstrap "${BASE_ARGS[@]}" "$WORK/base.tar" "${BASE_SOURCES[@]}"
  mv "$WORK/base.tar" "$BASE.tmp.$$" && mv "$BASE.tmp.$$" "$BASE"
fi

# ---- the ovault layer: the base extracted, customize.sh in a chroot ----
echo "appliance: ovault layer (customize.sh)"
R=$WORK/root
mkdir -p "$R"
# As root: owners by number, modes, device nodes, hard links, xattrs (capabilities).
tar -xf "$BASE" -C "$R" --numeric-owner --same-owner --same-permissions --xattrs --xattrs-include='*'
# What mmdebstrap gives its hooks: proc and sysfs read-only, a devpts (the tarball has the
# device nodes), its locale environment. Unmounted before the root is read, and by the trap.
MOUNTS=()
umount_all() { local i; for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do umount "${MOUNTS[i]}"; done; MOUNTS=(); }
trap 'umount_all; rm -rf --one-file-system "$WORK"' EXIT
mount -t proc -o ro proc "$R/proc" && MOUNTS+=("$R/proc")
mount -t sysfs -o ro,nosuid,nodev,noexec sys "$R/sys" && MOUNTS+=("$R/sys")
mount -t devpts -o noexec,nosuid,uid=5,mode=620,ptmxmode=666 none "$R/dev/pts" && MOUNTS+=("$R/dev/pts")
mkdir -p "$R/tmp/wheels" && cp "$WORK"/wheels/* "$R/tmp/wheels/"
DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C.UTF-8 LANGUAGE=C.UTF-8 LANG=C.UTF-8 \
  "$HERE/customize.sh" "$R" "$ROOT_UUID"
# mmdebstrap's final cleanup, which ran on the base before customize.sh did: empty apt
# lists and cache, the logs and caches that differ between runs, an empty machine-id, /run, /tmp.
quiet chroot "$R" apt-get -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null update
quiet chroot "$R" apt-get clean
umount_all
rm -rf --one-file-system "$R/var/lib/apt/lists/auxfiles"
rm -f "$R"/var/log/{dpkg.log,alternatives.log} "$R"/var/log/apt/{history.log,term.log,eipp.log.xz} \
  "$R/var/cache/ldconfig/aux-cache" "$R/var/lib/dbus/machine-id"
[[ ! -e $R/etc/machine-id ]] || : > "$R/etc/machine-id"
find "$R/run" "$R/tmp" -mindepth 1 -maxdepth 1 ! -path "$R/run/lock" -exec rm -rf --one-file-system {} +
# Byte-reproducible from here: every file time clamped to SOURCE_DATE_EPOCH.
quiet python3 "$HERE/repro.py" clamp "$R" "$SOURCE_DATE_EPOCH"

# ---- disk: MBR + one ext4 partition at 1 MiB + GRUB in the gap ----
echo "appliance: assembling the disk"
part_mib=$((DISK_SIZE_MIB - 1))
# Fixed UUID and directory hash seed, the build's time as "now" (superblock, journal, new
# inodes); mkfs copies each source file's ctime and atime, which repro.py then sets too.
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH quiet mkfs.ext4 -q -F -L ovault-root -U "$ROOT_UUID" \
  -E "root_owner=0:0,hash_seed=$ROOT_UUID" -O ^metadata_csum_seed,^orphan_file \
  -d "$WORK/root" "$WORK/root.ext4" "${part_mib}M"
quiet python3 "$HERE/repro.py" fstimes "$WORK/root.ext4" "$SOURCE_DATE_EPOCH"
truncate -s "${DISK_SIZE_MIB}M" "$WORK/disk.raw"
printf 'label: dos\nlabel-id: 0x0a11a1ce\nstart=2048, type=83, bootable\n' | sfdisk -q "$WORK/disk.raw"
dd if="$WORK/root.ext4" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
cat > "$WORK/early.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set root=(hd0,msdos1)
set prefix=(hd0,msdos1)/boot/grub
configfile /boot/grub/grub.cfg
CFG
grub-mkimage -O i386-pc -o "$WORK/core.img" -c "$WORK/early.cfg" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal configfile linux boot echo test serial terminal
core_sectors=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
(( core_sectors < 2047 )) || { echo "appliance: core.img does not fit before the partition" >&2; exit 1; }
# boot.img's code only (440 bytes: the disk signature and partition table stay), and
# core.img from sector 1, where boot.img looks for it by default.
dd if=/usr/lib/grub/i386-pc/boot.img of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$WORK/disk.raw" bs=512 seek=1 conv=notrunc status=none

# qcow2 with zlib compression, written in order (no -W): the same raw disk gives the same
# bytes. The OVA's members get SOURCE_DATE_EPOCH as their time.
DEST=$CACHE/$KEY
[[ $NOCACHE == 1 ]] && DEST=$WORK/out
mkdir -p "$DEST"
IMG=$DEST/ovault-appliance.qcow2
qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$IMG.tmp"
mv "$IMG.tmp" "$IMG"
python3 "$HERE/ova.py" --mtime "$SOURCE_DATE_EPOCH" "$IMG" "${IMG%.qcow2}.ova"
# The kernel and initrd beside it (qemu -kernel/-initrd boots, debugging).
cp -L "$WORK/root/vmlinuz" "$DEST/vmlinuz"; cp -L "$WORK/root/initrd.img" "$DEST/initrd.img"
cp --reflink=auto "$IMG" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cp --reflink=auto "${IMG%.qcow2}.ova" "$OVA.tmp" && mv "$OVA.tmp" "$OVA"
echo "appliance: built $OUT in $(( $(date +%s) - T0 ))s: $(du -h --apparent-size "$OUT" | cut -f1) qcow2, ${DISK_SIZE_MIB} MiB virtual, cache key $KEY"
echo "appliance: sha256 $(sha256sum < "$OUT" | cut -d' ' -f1) $OUT"
if [[ $NOCACHE != 1 ]]; then
  touch "$DEST/last-used"
  prune
fi
