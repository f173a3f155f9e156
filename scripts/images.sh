#!/usr/bin/env bash
# scripts/images.sh — build the Docker images of taskledger's default task kinds,
# locally and offline (no image registry is used, none needs to be reachable).
#
#   taskledger-busybox:latest  FROM scratch + Debian's static busybox: the offline demo
#                              image (same recipe as scripts/test-image/Dockerfile)
#   taskledger-thug:latest     the Thug honeyclient (PyPI thug 6.22, V8 through stpyv8)
#                              on a Debian root made with debootstrap --variant=minbase
#                              (the host's suite; the mirror is read from the host's apt
#                              sources), set up in a chroot by scripts/images/thug/setup-root.sh,
#                              then 'docker import'ed. Runs as uid 10001 (thug); the task
#                              argv calls the wrapper taskledger-thug (see scripts/images/thug/).
#
# Idempotent and cached: every image carries a label with the hash of its recipe; an
# image whose label matches is left alone (about a second). Thug's root file system is
# kept as a tarball in the cache directory, so a removed image is re-imported (seconds)
# instead of rebuilt (minutes). A changed recipe rebuilds, from the cached debootstrap
# root when that is less than a week old. Building needs root (debootstrap,
# chroot) and the package registries (Debian's mirror, PyPI); running the images needs neither.
#
# Usage:   scripts/images.sh [--only busybox|thug] [--rebuild]
#            --only NAME   build just that image
#            --rebuild     ignore the labels and the cached tarballs (thug: a fresh debootstrap)
#
# Environment:
#   TASKLEDGER_SKIP_THUG_IMAGE=1      leave taskledger-thug out
#   TASKLEDGER_IMAGE_CACHE=DIR        rootfs tarballs and build dirs (default /var/cache/taskledger/images)
#   TASKLEDGER_LOG_DIR=/var/log       where the build log goes (falls back to /tmp)
#   TASKLEDGER_DOCKER_BIN=PATH        the docker client to use (default: the first that answers)
#   TASKLEDGER_DEBIAN_MIRROR=URL      debootstrap mirror (default: the host's apt sources)
#
# Exit status 0 when every requested image is present and passed its check.

set -euo pipefail

_IM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_IM_ROOT=$(cd "$_IM_DIR/.." && pwd)
_IM_SELF=$_IM_DIR/$(basename "${BASH_SOURCE[0]}")
# shellcheck source=scripts/lib.sh
source "$_IM_DIR/lib.sh"
LIB_NAME=images LIB_SELF=$_IM_SELF

_IM_LABEL=org.taskledger.image.hash
_IM_BUSYBOX=taskledger-busybox:latest
_IM_THUG=taskledger-thug:latest
_IM_THUG_RECIPE=$_IM_DIR/images/thug
_IM_THUG_FILES=(packages.txt requirements-build.txt requirements.txt setup-root.sh taskledger-thug)
_IM_THUG_UID=10001
_IM_THUG_FIXTURE=$_IM_ROOT/tests/fixtures/thug/sample.html
# What 'docker import' sets; part of the recipe hash.
_IM_THUG_CHANGES=(
  'ENV PATH=/usr/local/bin:/opt/thug/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  'ENV HOME=/tmp'
  'ENV LANG=C.UTF-8'
  'ENV PYTHONDONTWRITEBYTECODE=1'
  'ENV PYTHONUNBUFFERED=1'
  'WORKDIR /tmp'
  "USER $_IM_THUG_UID:$_IM_THUG_UID"
  'CMD ["taskledger-thug", "--help"]'
)
# The sandbox the runner uses (src/workers/runner/executor.rs, run_docker).
# shellcheck disable=SC2054 # the commas belong to --tmpfs's value
_IM_SANDBOX=(--rm --network none --cap-drop ALL --security-opt no-new-privileges --read-only
  --tmpfs /tmp:rw,noexec,nosuid,size=64m --memory 1024m --memory-swap 1024m --pids-limit 256)

# _im_step IMAGE WHAT FIX COMMAND...: runs COMMAND with its output in the log, says how
# long it took; on failure prints the log's tail and the hint, and exits.
_im_step() {
  local image=$1 what=$2 fix=$3 t0
  shift 3
  t0=$(lib_now)
  lib_say "$image: $what ..."
  printf '\n==== %s: %s: %s\n' "$(date -u +%FT%TZ)" "$image" "$what" >>"$_IM_LOG"
  # A subshell with errexit of its own: inside 'if' errexit would be ignored.
  local rc=0
  set +e
  (
    set -e
    "$@"
  ) >>"$_IM_LOG" 2>&1 </dev/null
  rc=$?
  set -e
  if ((rc != 0)); then
    printf 'images: ---- last lines of %s ----\n' "$_IM_LOG" >&2
    tail -n 30 "$_IM_LOG" >&2 || true
    lib_die "$image: $what failed after $(lib_took "$t0") (log: $_IM_LOG)." "Fix: $fix"
  fi
  lib_say "$image: $what done in $(lib_took "$t0")"
}

# ------------------------------------------------------------------- docker --

_im_pick_docker() {
  local c
  if [[ -n ${TASKLEDGER_DOCKER_BIN:-} ]]; then
    _IM_DOCKER=$TASKLEDGER_DOCKER_BIN
    timeout 20 "$_IM_DOCKER" info --format '{{.ServerVersion}}' </dev/null >/dev/null 2>&1 ||
      lib_die "the docker client $_IM_DOCKER (TASKLEDGER_DOCKER_BIN) cannot talk to the engine." \
        "Fix: start the engine with scripts/services.sh (or unset TASKLEDGER_DOCKER_BIN)."
    return 0
  fi
  for c in "$(command -v docker 2>/dev/null || true)" /usr/bin/docker /usr/local/bin/docker; do
    [[ -n $c && -x $c ]] || continue
    if timeout 20 "$c" info --format '{{.ServerVersion}}' </dev/null >/dev/null 2>&1; then
      _IM_DOCKER=$c
      return 0
    fi
  done
  lib_die "no docker client can talk to a Docker engine." \
    "Fix: start one with 'scripts/services.sh --skip-postgres --skip-rabbitmq', then rerun."
}

_im_label_of() {
  "$_IM_DOCKER" image inspect --format "{{ index .Config.Labels \"$_IM_LABEL\" }}" "$1" 2>/dev/null || true
}

_im_size_of() {
  "$_IM_DOCKER" image inspect --format '{{.Size}}' "$1" 2>/dev/null |
    awk '{ printf "%.0f MB", $1 / 1000000 }'
}

# Drop superseded images of ours (untagged, carrying the label).
_im_prune() { "$_IM_DOCKER" image prune -f --filter "label=$_IM_LABEL" >/dev/null 2>&1 || true; }

# ------------------------------------------------------------------ busybox --

_im_busybox_static() {
  [[ -x /bin/busybox ]] || return 1
  if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then return 0; fi
  LC_ALL=C ldd /bin/busybox 2>&1 | grep -qE 'not a dynamic executable|statically linked'
}

_im_busybox_works() {
  [[ "$(timeout 60 "$_IM_DOCKER" run "${_IM_SANDBOX[@]}" "$_IM_BUSYBOX" sh -c 'echo ok' 2>/dev/null)" == ok ]]
}

_im_build_busybox_context() {
  local ctx=$1 hash=$2 buildkit=0
  if "$_IM_DOCKER" buildx version >/dev/null 2>&1; then buildkit=1; fi
  echo "DOCKER_BUILDKIT=$buildkit"
  DOCKER_BUILDKIT=$buildkit "$_IM_DOCKER" build --network none \
    --label "$_IM_LABEL=$hash" -t "$_IM_BUSYBOX" "$ctx"
}

_im_ensure_busybox() {
  local dockerfile=$_IM_DIR/test-image/Dockerfile t0
  t0=$(lib_now)
  [[ -f $dockerfile ]] || lib_die "missing $dockerfile." "Fix: 'git checkout -- scripts/test-image/Dockerfile'."
  if ! _im_busybox_static; then
    lib_apt_install busybox-static
    _im_busybox_static || lib_die "/bin/busybox is still missing or not statically linked after installing busybox-static." \
      "Fix: 'apt-get install --reinstall busybox-static' and check 'ldd /bin/busybox'."
  fi
  local hash
  hash=$(cat "$dockerfile" /bin/busybox | sha256sum | cut -d' ' -f1)
  if ((_IM_REBUILD == 0)) && [[ "$(_im_label_of "$_IM_BUSYBOX")" == "$hash" ]] && _im_busybox_works; then
    lib_say "busybox: $_IM_BUSYBOX is up to date (recipe ${hash:0:12}; checked in $(lib_took "$t0"))"
    return 0
  fi
  local ctx
  ctx=$(mktemp -d)
  cp "$dockerfile" "$ctx/Dockerfile"
  cp /bin/busybox "$ctx/busybox"
  local rc=0
  (_im_step busybox "docker build $_IM_BUSYBOX (recipe ${hash:0:12})" \
    "read the log; try the build by hand with DOCKER_BUILDKIT=0." \
    _im_build_busybox_context "$ctx" "$hash") || rc=$?
  rm -rf "$ctx"
  ((rc == 0)) || exit "$rc"
  _im_prune
  _im_busybox_works ||
    lib_die "$_IM_BUSYBOX was built but 'sh -c \"echo ok\"' in the sandbox does not print ok." \
      "Fix: run 'docker run --rm --network none $_IM_BUSYBOX sh -c \"echo ok\"' by hand to see the error."
  lib_say "busybox: $_IM_BUSYBOX ready in $(lib_took "$t0") ($(_im_size_of "$_IM_BUSYBOX")); checked 'sh -c \"echo ok\"' in the sandbox"
}

# --------------------------------------------------------------------- thug --

_im_suite() {
  local codename=""
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || lib_die "/etc/os-release names no VERSION_CODENAME." \
    "Fix: this recipe targets a Debian host (bookworm: Python 3.11 matches the pinned wheels)."
  printf '%s\n' "$codename"
}

# The host's Debian apt sources for SUITE, SUITE-updates and SUITE-security, one
# "URI SUITE" per line (one-line .list files and deb822 .sources files).
_im_host_sources() {
  local suite=$1 f
  local -a lists=() deb822=()
  [[ -f /etc/apt/sources.list ]] && lists+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && lists+=("$f"); done
  for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && deb822+=("$f"); done
  if ((${#lists[@]})); then
    awk -v s="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        uri = $i; su = $(i + 1)
        if (su == s || su == s "-updates" || su == s "-security") print uri, su
      }' "${lists[@]}"
  fi
  if ((${#deb822[@]})); then
    awk -v s="$suite" '
      function flush(   n, m, i, j, u, x) {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/) {
          n = split(uris, u, /[ \t]+/); m = split(suites, x, /[ \t]+/)
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
            if (u[i] != "" && (x[j] == s || x[j] == s "-updates" || x[j] == s "-security")) print u[i], x[j]
        }
        types = uris = suites = enabled = ""
      }
      FNR == 1 { flush() }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { $1 = ""; enabled = $0 }
      END { flush() }' "${deb822[@]}"
  fi
}

_im_thug_hash() {
  local suite=$1 arch=$2 f
  {
    printf 'taskledger-thug recipe 1\nsuite %s\narch %s\nuid %s\n' "$suite" "$arch" "$_IM_THUG_UID"
    printf 'change %s\n' "${_IM_THUG_CHANGES[@]}"
    for f in "${_IM_THUG_FILES[@]}"; do
      printf 'file %s\n' "$f"
      cat "$_IM_THUG_RECIPE/$f"
    done
  } | sha256sum | cut -d' ' -f1
}

# The host's pip settings that matter for downloading (index, proxy, timeout, CA file),
# as NAME=VALUE lines for the chroot's environment. The CA file itself is copied.
_im_pip_settings() {
  local py="" line key value
  for py in python3 pip3 pip; do lib_have "$py" && break || py=""; done
  [[ -n $py ]] || return 0
  local -a cmd=("$py" config list)
  [[ $py == python3 ]] && cmd=(python3 -m pip config list)
  local -a keys=(index-url extra-index-url trusted-host timeout default-timeout retries proxy cert)
  {
    "${cmd[@]}" 2>/dev/null | while IFS= read -r line; do
      key=${line%%=*}
      value=${line#*=}
      [[ $key != :env:* ]] || continue # the environment is read below
      key=${key#*.}                    # global.index-url, install.timeout
      value=${value#\'}
      value=${value%\'}
      [[ " ${keys[*]} " == *" $key "* ]] || continue
      key=${key//-/_}
      printf 'PIP_%s=%s\n' "${key^^}" "$value"
    done
    for key in "${keys[@]}"; do
      key=PIP_${key//-/_}
      key=${key^^}
      [[ -z ${!key:-} ]] || printf '%s=%s\n' "$key" "${!key}"
    done
  } | awk '{ k = substr($0, 1, index($0, "=") - 1); if (!(k in v)) o[++n] = k; v[k] = $0 }
           END { for (i = 1; i <= n; i++) print v[o[i]] }'
}

_IM_THUG_WORK=""

_im_mounts_under() {
  # Mount points at or under $1, deepest first (mountinfo field 5).
  awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

_im_thug_unmount() {
  local root=$1 m
  while read -r m; do
    [[ -n $m ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || lib_warn "could not unmount $m"
  done < <(_im_mounts_under "$root")
}

_im_thug_unmount_all() {
  _im_thug_unmount "$1"
  local left
  left=$(_im_mounts_under "$1")
  [[ -z $left ]] || { echo "still mounted: $left"; return 1; }
}

_im_thug_cleanup() {
  local work=$_IM_THUG_WORK
  [[ -n $work && -d $work ]] || return 0
  _im_thug_unmount "$work/root"
  if [[ -n "$(_im_mounts_under "$work")" ]]; then
    lib_warn "left $work in place: something is still mounted under it ($(_im_mounts_under "$work" | tr '\n' ' '))"
    return 0
  fi
  rm -rf --one-file-system "$work"
  _IM_THUG_WORK=""
}

_im_thug_prepare_chroot() {
  local root=$1 suite=$2 apt_ca=$3
  shift 3
  local uri su
  mount -t proc proc "$root/proc"
  if [[ ! -c $root/dev/null || ! -c $root/dev/urandom ]]; then
    echo "debootstrap left no usable /dev in the root; bind-mounting the host's /dev"
    mount --bind /dev "$root/dev"
  fi
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  rm -f "$root/etc/apt/sources.list"
  rm -rf "$root/etc/apt/sources.list.d"
  mkdir -p "$root/etc/apt/sources.list.d"
  # "$@": URI SUITE pairs from the host's apt sources (written only into the build root;
  # removed again before the root is packed).
  while (($#)); do
    uri=$1 su=$2
    shift 2
    printf 'deb %s %s main\n' "$uri" "$su" >>"$root/etc/apt/sources.list"
  done
  echo "chroot apt sources:"
  cat "$root/etc/apt/sources.list"
  rm -rf "$root/tmp/tl-build"
  mkdir -p "$root/tmp/tl-build"
  local f
  for f in "${_IM_THUG_FILES[@]}"; do cp "$_IM_THUG_RECIPE/$f" "$root/tmp/tl-build/$f"; done
  [[ -z $apt_ca ]] || cp -L "$apt_ca" "$root/tmp/tl-build/apt-ca.pem"
}

_im_thug_setup() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TL_BUILD=/tmp/tl-build TL_UID="$_IM_THUG_UID" "$@" \
    /bin/sh /tmp/tl-build/setup-root.sh
}

_im_thug_finish_root() {
  local root=$1
  # Nothing of the build machine stays in the image: resolver, hostname, apt sources, CA copies.
  : >"$root/etc/resolv.conf"
  rm -f "$root/etc/hostname" "$root/etc/apt/sources.list"
  rm -rf "$root/etc/apt/sources.list.d"/* "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/* \
    "$root/debootstrap"
  find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete
  chmod 1777 "$root/tmp" "$root/var/tmp"
  find "$root/var/log" -type f -delete
}

# _im_thug_pack ROOT TARBALL [keep-dev]: the image's tarball leaves /dev empty (the
# engine provides it); the cached debootstrap root keeps its device nodes for the chroot.
_im_thug_pack() {
  local root=$1 tarball=$2
  local -a excludes=(--exclude='./proc/*' --exclude='./sys/*')
  [[ ${3:-} == keep-dev ]] || excludes+=(--exclude='./dev/*')
  tar --numeric-owner --one-file-system -C "$root" "${excludes[@]}" -cf "$tarball.partial" .
  mv -f "$tarball.partial" "$tarball"
  ls -l "$tarball"
}

_im_thug_unpack_base() {
  local base=$1 root=$2
  mkdir -p "$root"
  tar --numeric-owner -xpf "$base" -C "$root"
  echo "unpacked $base ($(du -sh --one-file-system "$root" | cut -f1))"
}

_im_thug_import() {
  local tarball=$1 hash=$2 c
  local -a args=()
  for c in "${_IM_THUG_CHANGES[@]}"; do args+=(--change "$c"); done
  args+=(--change "LABEL $_IM_LABEL=$hash")
  "$_IM_DOCKER" import "${args[@]}" --message "taskledger-thug recipe $hash" "$tarball" "$_IM_THUG"
}

# Analyse the fixture in the runner's sandbox; Thug must have run its JavaScript in V8.
_im_thug_check() {
  local in out rc=0 t0
  t0=$(lib_now)
  in=$(mktemp -d)
  out=$(mktemp -d)
  chmod 0777 "$out" # the image's user (uid $_IM_THUG_UID) writes there
  if [[ -f $_IM_THUG_FIXTURE ]]; then
    cp "$_IM_THUG_FIXTURE" "$in/sample.html"
  else
    printf '<html><body><script>document.write("<iframe src=\\"http://127.0.0.1:9/tl-iframe-" + (6 * 7) + ".html\\"></iframe>");</script></body></html>\n' >"$in/sample.html"
  fi
  chmod 0644 "$in/sample.html"
  # Like the runner: the input file bind-mounted read-only as /in/NAME.
  timeout 300 "$_IM_DOCKER" run "${_IM_SANDBOX[@]}" -v "$in/sample.html:/in/sample.html:ro" -v "$out:/out" \
    "$_IM_THUG" taskledger-thug file /in/sample.html || rc=$?
  echo "exit $rc; /out: $(find "$out" -mindepth 1 -maxdepth 1 -printf '%f ')"
  if ((rc == 0)) && [[ -f $out/result.json ]] &&
    grep -q '"engine": "Google V8"' "$out/result.json" &&
    grep -q 'tl-iframe-42' "$out/result.json"; then
    echo "sample analysed in the sandbox in $(lib_took "$t0"); V8 ran its JavaScript"
  else
    [[ ! -f $out/result.json ]] || head -c 3000 "$out/result.json"
    rc=1
  fi
  rm -rf "$in" "$out"
  return "$rc"
}

_im_ensure_thug() {
  local t0 suite arch hash cache tarball have
  t0=$(lib_now)
  local f
  for f in "${_IM_THUG_FILES[@]}"; do
    [[ -f $_IM_THUG_RECIPE/$f ]] || lib_die "missing $_IM_THUG_RECIPE/$f." "Fix: restore it from git ('git checkout -- scripts/images/thug')."
  done
  suite=$(_im_suite)
  arch=$(dpkg --print-architecture 2>/dev/null || echo unknown)
  hash=$(_im_thug_hash "$suite" "$arch")
  have=$(_im_label_of "$_IM_THUG")
  if ((_IM_REBUILD == 0)) && [[ $have == "$hash" ]]; then
    lib_say "thug: $_IM_THUG is up to date (recipe ${hash:0:12}, $suite/$arch; checked in $(lib_took "$t0"))"
    return 0
  fi
  if [[ -n $have && $have != "$hash" ]]; then
    lib_say "thug: $_IM_THUG has recipe ${have:0:12}, the recipe is now ${hash:0:12}"
  fi
  [[ $arch == amd64 ]] || lib_warn "thug: the pinned wheels (scripts/images/thug/requirements.txt) were verified on amd64 only; this host is $arch"

  cache=${TASKLEDGER_IMAGE_CACHE:-/var/cache/taskledger/images}
  mkdir -p "$cache" 2>/dev/null || lib_need_root "creating the image cache $cache"
  [[ -w $cache ]] || lib_die "the image cache $cache is not writable by $(id -un)." \
    "Fix: rerun as root, or point TASKLEDGER_IMAGE_CACHE at a writable directory."
  tarball=$cache/taskledger-thug-$suite-$arch-${hash:0:16}.tar

  # One build at a time per cache (test.sh and run.sh may start together).
  exec 9>"$cache/.lock"
  if ! flock -n 9; then
    lib_say "thug: another scripts/images.sh holds $cache/.lock; waiting for it ..."
    flock -w 3600 9 || lib_die "waited an hour for $cache/.lock." "Fix: find the other build ('fuser $cache/.lock') or remove the lock file."
    if ((_IM_REBUILD == 0)) && [[ "$(_im_label_of "$_IM_THUG")" == "$hash" ]]; then
      lib_say "thug: $_IM_THUG was built meanwhile (recipe ${hash:0:12})"
      return 0
    fi
  fi

  if ((_IM_REBUILD == 0)) && [[ -f $tarball ]]; then
    lib_say "thug: cached root file system $tarball ($(du -h "$tarball" | cut -f1)), importing it instead of rebuilding"
  else
    _im_build_thug_root "$suite" "$arch" "$tarball"
  fi

  _im_step thug "docker import $_IM_THUG (recipe ${hash:0:12})" \
    "read the log; if the tarball is damaged delete $tarball and rerun." \
    _im_thug_import "$tarball" "$hash"
  _im_prune
  _im_step thug "check: the wrapper analyses $(basename "$_IM_THUG_FIXTURE") in the runner's sandbox" \
    "run 'docker run --rm --network none $_IM_THUG taskledger-thug --version' by hand; if the image is broken, rerun with --rebuild." \
    _im_thug_check
  lib_say "thug: $_IM_THUG ready in $(lib_took "$t0") ($(_im_size_of "$_IM_THUG"))"
}

_im_build_thug_root() {
  local suite=$1 arch=$2 tarball=$3 t0 cache
  t0=$(lib_now)
  cache=$(dirname "$tarball")
  lib_need_root "building $_IM_THUG (debootstrap, chroot)"
  lib_have debootstrap || lib_apt_install debootstrap
  local tool
  for tool in chroot tar flock mount umount; do
    lib_have "$tool" || lib_die "$tool not found." "Fix: install it (coreutils, tar, util-linux, mount)."
  done

  # Mirrors: the host's apt sources (never written into a committed file).
  local -a pairs=()
  local uri su mirror=${TASKLEDGER_DEBIAN_MIRROR:-}
  while read -r uri su; do
    [[ -n $uri ]] || continue
    pairs+=("$uri" "$su")
    [[ -z $mirror && $su == "$suite" ]] && mirror=$uri
  done < <(_im_host_sources "$suite" | awk '!seen[$0]++')
  [[ -n $mirror ]] || lib_die "no apt source for suite '$suite' in /etc/apt/sources.list or /etc/apt/sources.list.d/*.{list,sources}." \
    "Fix: add the Debian mirror for $suite to the host's apt sources, or set TASKLEDGER_DEBIAN_MIRROR=URL."
  if ((${#pairs[@]} == 0)) || [[ -n ${TASKLEDGER_DEBIAN_MIRROR:-} && " ${pairs[*]} " != *" $mirror $suite "* ]]; then
    pairs=("$mirror" "$suite" "${pairs[@]}")
  fi

  # apt in the chroot: the host's proxy settings; an https mirror needs the host's CA file.
  local -a chroot_env=()
  local apt_opts="" apt_ca="" http_proxy_apt="" https_proxy_apt=""
  eval "$(apt-config shell http_proxy_apt Acquire::http::Proxy https_proxy_apt Acquire::https::Proxy 2>/dev/null)" || true
  [[ -z $http_proxy_apt ]] || apt_opts+=" -o Acquire::http::Proxy=$http_proxy_apt"
  [[ -z $https_proxy_apt ]] || apt_opts+=" -o Acquire::https::Proxy=$https_proxy_apt"
  if [[ " ${pairs[*]} " == *" https://"* && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    apt_ca=/etc/ssl/certs/ca-certificates.crt
    apt_opts+=" -o Acquire::https::CaInfo=/tmp/tl-build/apt-ca.pem"
  fi
  [[ -z $apt_opts ]] || chroot_env+=("TL_APT_OPTS=${apt_opts# }")
  # pip in the chroot: the host's pip settings; its CA file is copied in for the build.
  local line pip_ca=""
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    if [[ $line == PIP_CERT=* ]]; then
      pip_ca=${line#PIP_CERT=}
      [[ -f $pip_ca ]] || pip_ca=""
      continue
    fi
    chroot_env+=("$line")
  done < <(_im_pip_settings)
  [[ -z $pip_ca ]] || chroot_env+=(PIP_CERT=/tmp/tl-build/pip-ca.pem)
  local v
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -z ${!v:-} ]] || chroot_env+=("$v=${!v}")
  done

  _IM_THUG_WORK=$(mktemp -d "$cache/build-thug.XXXXXX")
  trap '_im_thug_cleanup' EXIT
  trap 'lib_warn "interrupted: unmounting and removing $_IM_THUG_WORK"; _im_thug_cleanup; exit 130' INT TERM
  local root=$_IM_THUG_WORK/root
  lib_say "thug: building a $suite/$arch root in $_IM_THUG_WORK (log: $_IM_LOG)"

  # The bare debootstrap result is cached too (a changed recipe then costs no new
  # debootstrap); setup-root.sh upgrades it, and after a week it is made afresh.
  local base=$cache/debian-$suite-$arch-minbase.tar
  if ((_IM_REBUILD == 0)) && [[ -n "$(find "$base" -maxdepth 0 -mtime -7 2>/dev/null)" ]]; then
    _im_step thug "unpack the cached debootstrap root $(basename "$base")" \
      "delete $base and rerun." \
      _im_thug_unpack_base "$base" "$root"
  else
    _im_step thug "debootstrap --variant=minbase $suite" \
      "check that the mirror of the host's apt sources answers ('apt-get update'), then rerun." \
      debootstrap --variant=minbase --arch="$arch" "$suite" "$root" "$mirror"
    _im_step thug "keep the debootstrap root as $(basename "$base")" \
      "check the free space of $cache ('df -h $cache')." \
      _im_thug_pack "$root" "$base" keep-dev
  fi
  _im_step thug "prepare the chroot (/proc, resolv.conf, apt sources, recipe)" \
    "read the log above." \
    _im_thug_prepare_chroot "$root" "$suite" "$apt_ca" "${pairs[@]}"
  [[ -z $pip_ca ]] || cp -L "$pip_ca" "$root/tmp/tl-build/pip-ca.pem"
  _im_step thug "chroot: apt-get install + pip install thug (scripts/images/thug/setup-root.sh)" \
    "read the log above: an apt or pip error names the package; a changed pin needs its new hash in scripts/images/thug/requirements.txt." \
    _im_thug_setup "$root" "${chroot_env[@]}"
  _im_step thug "unmount and clean the root" "read the log above." \
    _im_thug_unmount_all "$root"
  _im_step thug "strip what is the build host's (resolv.conf, hostname, apt sources, lists, logs)" \
    "read the log above." \
    _im_thug_finish_root "$root"
  _im_step thug "pack the root into $tarball" \
    "check the free space of $cache ('df -h $cache')." \
    _im_thug_pack "$root" "$tarball"
  # Older tarballs of this image are superseded.
  find "$cache" -maxdepth 1 -name 'taskledger-thug-*.tar' ! -path "$tarball" -delete
  _im_step thug "remove the build directory" "remove $_IM_THUG_WORK by hand (after 'grep $_IM_THUG_WORK /proc/self/mountinfo' shows nothing)." \
    _im_thug_cleanup
  trap - EXIT INT TERM
  lib_say "thug: root file system built in $(lib_took "$t0")"
}

# --------------------------------------------------------------------- main --

_im_usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$_IM_SELF"
}

_im_main() {
  local only=""
  _IM_REBUILD=0
  while (($#)); do
    case $1 in
      --only)
        [[ $# -ge 2 ]] || lib_die "--only needs busybox or thug." "Fix: see '$_IM_SELF --help'."
        only=$2
        shift
        ;;
      --only=*) only=${1#--only=} ;;
      --rebuild) _IM_REBUILD=1 ;;
      -h | --help) _im_usage; return 0 ;;
      *) lib_die "unknown argument '$1'." "Fix: see '$_IM_SELF --help'." ;;
    esac
    shift
  done
  case $only in
    "" | busybox | thug) ;;
    *) lib_die "--only $only: no such image." "Fix: use --only busybox or --only thug." ;;
  esac
  _IM_LOG=$(lib_log_dir)/taskledger-images.log
  LIB_APT_LOG=$_IM_LOG
  _im_pick_docker

  local t0 built=()
  t0=$(lib_now)
  if [[ -z $only || $only == busybox ]]; then
    _im_ensure_busybox
    built+=("$_IM_BUSYBOX")
  fi
  if [[ -z $only || $only == thug ]]; then
    if [[ ${TASKLEDGER_SKIP_THUG_IMAGE:-0} == 1 && $only != thug ]]; then
      lib_say "thug: skipped (TASKLEDGER_SKIP_THUG_IMAGE=1)"
    else
      _im_ensure_thug
      built+=("$_IM_THUG")
    fi
  fi
  lib_say "ready in $(lib_took "$t0"): ${built[*]:-nothing}"
}

_im_main "$@"
