#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root):
# Debian packages, then a virtualenv with the pinned Python dependencies.
# Every step checks first, so a second run does almost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils qemu-block-extra          # qemu-img, qemu-nbd, qemu-io
  nfs-ganesha nfs-ganesha-vfs rpcbind  # the user-space NFSv3 server of the sandbox
  libnfs13 libnfs-utils libnfs-dev     # user-space NFS client (ctypes + nfs-cp)
  postgresql                           # the catalog (embedded cluster by default)
  chromium                             # browser tests of the UI plugin
  openssl                              # sandbox CA and certificates
  # building wheels; ovirt-engine-sdk-python is an sdist with a C extension on libxml2
  make gcc python3-dev python3-venv libcurl4-openssl-dev libssl-dev libxml2-dev
  procps psmisc curl
  systemd                              # systemd-analyze: the deploy units' security exposure test
  prometheus                           # promtool for the deploy/monitoring/ tests (the server itself is unused)
  qemu-system-x86 genisoimage          # the appliance boot test (tests/e2e/test_appliance.py)
  mmdebstrap                           # the sandbox guests' Debian image (sandbox/guests/build.py)
  python3-guestfs libguestfs-tools libguestfs-xfs linux-image-amd64  # file-level restore (libguestfs needs a kernel in /boot)
  grub-pc-bin grub-common fdisk e2fsprogs  # the appliance image build (deploy/appliance/build.sh, ./dev appliance)
  git openssh-client                   # the tests: the revision under test, ssh into the booted appliance
)

# One dpkg-query for all of them (each call reads the whole status database).
installed=" $(dpkg-query -W -f='${Package}=${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
  | sed -n 's/=install ok installed$//p' | tr '\n' ' ' || true) "
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ $installed == *" $p "* ]] || missing+=("$p")
done
# ESLint for the UI plugin needs npm: Debian's nodejs and npm when there is no npm at
# all (a NodeSource nodejs already brings its own npm and conflicts with Debian's npm).
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With recommends, as the packages were installed and tested on this kind of machine.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Debian postgresql package starts a system cluster through its service
# scripts; ovault never uses it (it runs private clusters), so leave it alone.

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ovault-deps
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python dependencies"
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

# libguestfs' Python binding is Debian's (python3-guestfs, built for the
# system 3.11): expose only its two files to the venv, not all of dist-packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for f in /usr/lib/python3/dist-packages/guestfs.py /usr/lib/python3/dist-packages/libguestfsmod.cpython-311-*.so; do
  if [[ -e $f && ! -e $site/$(basename "$f") ]]; then ln -s "$f" "$site/"; fi
done

# The SDK's own example scripts (backup_vm.py, download_disk.py, ...) ship only
# in its source distribution; the conformance tests run them unchanged.
sdk_ver=$(grep -i '^ovirt-engine-sdk-python==' requirements.lock | cut -d= -f3)
examples=.cache/sdk/ovirt_engine_sdk_python-$sdk_ver/examples
if [[ ! -d $examples ]]; then
  echo "setup: fetching ovirt-engine-sdk-python $sdk_ver examples"
  mkdir -p .cache/sdk
  .venv/bin/pip download -q --no-deps --no-binary :all: "ovirt-engine-sdk-python==$sdk_ver" -d .cache/sdk
  tar xzf ".cache/sdk/ovirt_engine_sdk_python-$sdk_ver.tar.gz" -C .cache/sdk
fi

# The sandbox guests' image (kernel, initramfs, ext4/XFS/LVM base disks), built from
# Debian packages into /var/cache/ovault-tests/guests/<key of its inputs>; a few minutes
# the first time, nothing when the cache holds it.
PYTHONPATH=. .venv/bin/python -m sandbox.guests.build >/dev/null

# ESLint for the UI plugin, pinned by ui-plugin/package-lock.json, into
# ui-plugin/node_modules (the plugin itself needs no build). Reinstalled only
# when the lock file changes.
lock_stamp=ui-plugin/node_modules/.ovault-lock
want_lock=$(sha256sum ui-plugin/package-lock.json | cut -d' ' -f1)
if [[ ! -f $lock_stamp || $(cat "$lock_stamp") != "$want_lock" ]]; then
  echo "setup: installing the UI plugin's lint tools (npm ci)"
  (cd ui-plugin && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want_lock" > "$lock_stamp"
fi
