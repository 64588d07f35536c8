#!/usr/bin/env bash
# Checks the README's promise on a truly fresh Debian 12: a minimal bookworm root
# (debootstrap minbase + python3 + pip, nothing else) gets a clean clone of this
# repository's HEAD (commit first: uncommitted changes are not in it), and `./dev demo
# --exit` (and whatever else is asked) must do all the set-up itself and pass. Run as
# root on a Debian machine:
#
#   scripts/fresh-debian-check.sh                        # demo
#   scripts/fresh-debian-check.sh demo quick again       # then the quick tests, then idempotence
#
# Steps, run in the order given (the first stops at a failure):
#   demo     ./dev demo --exit
#   quick    ./dev quick (the unit tier)
#   test     ./dev test (the whole suite; most of an hour)
#   collect  ./dev setup, then `pytest tests --collect-only`: the whole suite imports and
#            every marker is known, without running it
#   again    ./dev setup once more: fails if it changes anything (Debian packages, the venv,
#            node_modules, the SDK examples, the guest image cache); prints its time
#
# FRESH_ROOT (default /var/tmp/ovault-fresh) is rebuilt from nothing unless
# FRESH_KEEP=1, which keeps the root (its Debian packages and /var/cache/ovault-tests)
# and the clone's ignored files (.venv, ui-plugin/node_modules, .cache) and only moves
# the clone to this repository's HEAD: quicker, but it no longer checks a first set-up.
# The host's apt sources, pip and npm configuration, local CA certificates and /opt
# package mirrors are made visible inside, so the chroot downloads from where the host
# does. Package scripts may not start daemons (policy-rc.d). The sandbox's NFS lock file
# is shared with the host, so this waits for (and blocks) other sandboxes using ports
# 2049/111. Everything is unmounted and every process started inside is stopped at the end.
set -euo pipefail
ROOT=${FRESH_ROOT:-/var/tmp/ovault-fresh}
REPO=$(cd "$(dirname "$0")/.." && pwd)
STEPS=("$@")
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(demo)
for s in "${STEPS[@]}"; do
  [[ $s =~ ^(demo|quick|test|collect|again)$ ]] || { echo "usage: $0 [demo|quick|test|collect|again]..." >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 2; }

mirror() {
  local m
  m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $m ]] || m=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  echo "${m:-http://deb.debian.org/debian}"
}

cleanup() {
  set +e
  for p in /proc/[0-9]*; do  # processes whose root is the chroot
    [[ $(readlink "$p/root" 2>/dev/null) == "$ROOT" ]] && kill -TERM "${p#/proc/}" 2>/dev/null
  done
  sleep 2
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/root" 2>/dev/null) == "$ROOT" ]] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  findmnt -n -o TARGET --list | grep -E "^$ROOT(/|$)" | sort -r | while read -r m; do umount "$m"; done
  set -e
}
trap cleanup EXIT

t0=$SECONDS
if [[ ${FRESH_KEEP:-0} != 1 || ! -x $ROOT/usr/bin/python3 ]]; then
  cleanup
  rm -rf "$ROOT"
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  echo "fresh: debootstrap bookworm from $(mirror)"
  debootstrap --variant=minbase bookworm "$ROOT" "$(mirror)" >/dev/null
fi

# What the host uses to reach its package registries.
for f in /etc/resolv.conf /etc/hosts /etc/pip.conf /root/.config/pip/pip.conf /etc/npmrc; do
  [[ -e $f ]] && install -D -m 0644 "$f" "$ROOT$f"
done
# The host's sources replace debootstrap's one-line sources.list (both at once would
# name every index twice).
if compgen -G "/etc/apt/sources.list.d/*" >/dev/null || [[ -s /etc/apt/sources.list ]]; then
  rm -f "$ROOT/etc/apt/sources.list"
fi
cp -a /etc/apt/sources.list* /etc/apt/apt.conf.d "$ROOT/etc/apt/" 2>/dev/null || true
[[ -d /usr/local/share/ca-certificates ]] && cp -a /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d" && chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

mountpoint -q "$ROOT" || mount --bind "$ROOT" "$ROOT"  # "/" in the chroot's mount table (ganesha needs it)
mount -t proc proc "$ROOT/proc"
mount --bind /sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
mount -t tmpfs -o mode=0755 run "$ROOT/run"
mkdir -p "$ROOT/run/lock" && chmod 1777 "$ROOT/run/lock"
mount -t tmpfs -o mode=1777 tmp "$ROOT/tmp"
touch /run/ovault-nfs.lock "$ROOT/run/ovault-nfs.lock"
mount --bind /run/ovault-nfs.lock "$ROOT/run/ovault-nfs.lock"  # one NFS sandbox per machine
for d in /opt/*; do  # local package mirrors the pip configuration may point at
  [[ -d $d ]] || continue
  mkdir -p "$ROOT$d" && mount --bind "$d" "$ROOT$d" && mount -o remount,bind,ro "$ROOT$d"
done

inside() {
  env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    $(env | grep -E '^(PIP_[A-Z_]+|SSL_CERT_[A-Z]+|REQUESTS_CA_BUNDLE)=' | tr '\n' ' ') \
    chroot "$ROOT" "$@"
}

# "Nothing preinstalled beyond Python and pip."
inside bash -c "apt-get update -q >/dev/null && apt-get install -y -q python3 python3-pip ca-certificates >/dev/null \
                && update-ca-certificates >/dev/null"
CLONE=$ROOT/root/ovault
if [[ ${FRESH_KEEP:-0} == 1 && -d $CLONE/.git ]]; then
  # Tracked and untracked files follow HEAD; ignored ones (.venv, node_modules, .cache) stay.
  git -C "$CLONE" fetch -q "$REPO" HEAD
  git -C "$CLONE" checkout -q -f --detach FETCH_HEAD
  git -C "$CLONE" clean -q -fd
else
  rm -rf "$CLONE"
  git clone -q "$REPO" "$CLONE"
fi
echo "fresh: root ready in $((SECONDS - t0)) s; clone of $(git -C "$REPO" rev-parse --short HEAD) in /root/ovault"

# `again`: ./dev setup a second time must change nothing. What it could change is
# compared by modification time against a mark set just before it.
again() {
  local mark=/root/ovault/.cache/fresh-again-mark changed
  inside bash -c "mkdir -p /root/ovault/.cache && touch $mark && sleep 1"
  inside bash -c "cd /root/ovault && ./dev setup" || return
  changed=$(inside bash -c "cd /root/ovault && find /var/lib/dpkg/status /var/lib/dpkg/info .venv \
      ui-plugin/node_modules .cache /var/cache/ovault-tests -newer $mark \
      ! -path '*/__pycache__*' ! -path $mark -print 2>/dev/null | head -20")
  inside rm -f "$mark"
  [[ -z $changed ]] || { printf 'fresh: the second set-up changed:\n%s\n' "$changed" >&2; return 1; }
}

rc=0
for s in "${STEPS[@]}"; do
  t=$SECONDS
  case $s in
    demo)    what="./dev demo --exit"; cmd=(inside bash -c "cd /root/ovault && ./dev demo --exit") ;;
    collect) what="pytest --collect-only"
             cmd=(inside bash -o pipefail -c "cd /root/ovault && ./dev setup && .venv/bin/python -m pytest tests --collect-only -q | tail -3") ;;
    again)   what="second ./dev setup"; cmd=(again) ;;
    *)       what="./dev $s"; cmd=(inside bash -c "cd /root/ovault && ./dev $s") ;;
  esac
  if "${cmd[@]}"; then
    echo "fresh: $what passed in $((SECONDS - t)) s"
  else
    rc=$?
    echo "fresh: $what FAILED (exit $rc) after $((SECONDS - t)) s"
    break
  fi
done
exit $rc
