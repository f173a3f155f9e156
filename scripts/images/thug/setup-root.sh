#!/bin/sh
# scripts/images/thug/setup-root.sh — runs INSIDE the debootstrapped chroot of
# taskledger-thug (started by scripts/images.sh, which copies this directory to
# /tmp/tl-build, mounts /proc, copies resolv.conf and writes the apt sources).
#
#   1. apt-get upgrade, then install the packages of packages.txt
#   2. a venv /opt/thug: requirements-build.txt, then requirements.txt
#      (exact versions, hashes checked, no dependency resolution)
#   3. the wrapper /usr/local/bin/taskledger-thug, the user thug (uid 10001),
#      /out and /in owned by it
#   4. a check that thug imports STPyV8 (V8), then caches and docs stripped
#
# Environment (set by images.sh): TL_BUILD (this directory's copy), TL_UID,
# TL_APT_OPTS (extra '-o' options for apt-get, e.g. a CA file or proxy),
# PIP_* (the host's pip settings: index, certificate, timeout).
set -eu

build=${TL_BUILD:-/tmp/tl-build}
uid=${TL_UID:-10001}
venv=/opt/thug

step() { printf '\n==== setup-root %s: %s\n' "$(date -u +%T)" "$*"; }

export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# shellcheck disable=SC2086 # TL_APT_OPTS is a list of words on purpose
set -- ${TL_APT_OPTS:-}

step "apt-get update && apt-get upgrade (the debootstrap root may come from the cache)"
apt-get "$@" -q update
apt-get "$@" -q -y upgrade

step "apt-get install $(grep -v '^[[:space:]]*#' "$build/packages.txt" | tr '\n' ' ')"
# shellcheck disable=SC2046 # one package per word
apt-get "$@" -q -y --no-install-recommends install $(grep -v '^[[:space:]]*#' "$build/packages.txt")

step "venv $venv"
python3 -m venv "$venv"
"$venv/bin/python3" -m pip --version

step "pip install -r requirements-build.txt"
"$venv/bin/pip" install --no-deps --require-hashes -r "$build/requirements-build.txt"

step "pip install -r requirements.txt"
"$venv/bin/pip" install --no-deps --require-hashes --no-build-isolation -r "$build/requirements.txt"
"$venv/bin/pip" check || {
  echo "setup-root: 'pip check' reports missing or conflicting dependencies (pylibemu is expected to be absent):" >&2
  "$venv/bin/pip" check 2>&1 | grep -v -i pylibemu >&2 && exit 1
  true
}

step "wrapper, user, directories"
install -m 0755 "$build/taskledger-thug" /usr/local/bin/taskledger-thug
groupadd --system --gid "$uid" thug
useradd --system --uid "$uid" --gid "$uid" --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thug
# /out: the runner's anonymous volume is seeded from the image, so it starts out
# owned by thug; /in: where input files are mounted (read-only).
install -d -m 0755 -o "$uid" -g "$uid" /out
install -d -m 0755 /in

step "check: thug runs and uses V8"
version=$("$venv/bin/thug" -V 2>&1)
echo "$version"
case $version in
  *"Google V8"*) ;;
  *) echo "setup-root: 'thug -V' does not name Google V8 as its JS engine: $version" >&2; exit 1 ;;
esac
/usr/bin/python3 /usr/local/bin/taskledger-thug --version

step "strip caches and docs"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
  /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/lintian/* \
  /usr/share/locale/* /root/.cache /root/.pip
find /var/log -type f -delete
# The bytecode pip wrote stays: the root is read-only at run time.
echo "setup-root: done"
