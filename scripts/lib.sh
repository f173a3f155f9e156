# shellcheck shell=bash
# scripts/lib.sh — what taskledger's scripts share; sourced by them, never run:
# messages that name the script, timing, the root check, and installing missing
# Debian packages with apt-get.
#
# Set before calling these:
#   LIB_NAME      the word every message starts with (e.g. services)
#   LIB_SELF      the script's path, named in the "rerun as root" hint
#   LIB_APT_LOG   where apt-get's output goes (default: taskledger-apt.log in lib_log_dir)

lib_say() { printf '%s: %s\n' "$LIB_NAME" "$*"; }
lib_warn() { printf '%s: WARNING: %s\n' "$LIB_NAME" "$*" >&2; }

# lib_die MESSAGE [HINT...]: MESSAGE and a line per HINT on standard error, then exit 1.
lib_die() {
  printf '%s: ERROR: %s\n' "$LIB_NAME" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '%s:   %s\n' "$LIB_NAME" "$line" >&2; done
  exit 1
}

# lib_log_dir: where logs go: $TASKLEDGER_LOG_DIR (default /var/log) when writable,
# else $TMPDIR (default /tmp).
lib_log_dir() {
  local dir=${TASKLEDGER_LOG_DIR:-/var/log}
  [[ -w $dir ]] || dir=${TMPDIR:-/tmp}
  printf '%s\n' "$dir"
}

# lib_now: the time, in seconds with fractions; lib_took T0: the seconds since
# T0 (a lib_now), as e.g. 12.3s.
lib_now() { date +%s.%N; }
lib_took() { awk -v a="$1" -v b="$(lib_now)" 'BEGIN { printf "%.1fs", b - a }'; }

lib_have() { command -v "$1" >/dev/null 2>&1; }
lib_is_root() { [[ ${EUID:-$(id -u)} -eq 0 ]]; }

# lib_need_root WHAT [ALTERNATIVE]: exits, saying WHAT needs root, unless running as root.
lib_need_root() {
  lib_is_root ||
    lib_die "$1 needs root, but this script runs as $(id -un)." \
      "Fix: rerun as root, e.g. 'sudo $LIB_SELF'${2:+, or $2}."
}

# lib_apt_install PACKAGE...: installs the packages with apt-get (root only; 'apt-get
# update' once per run), its output in $LIB_APT_LOG; on failure shows the log's tail
# and exits.
_LIB_APT_UPDATED=0
# _lib_apt LOG ARGS...: apt-get ARGS, waiting for another apt (a second setup script
# run beside this one) to let go of its locks: dpkg's lock through apt's own timeout,
# the package lists' lock (which that timeout does not cover) by retrying for 10 min.
_lib_apt() {
  local log=$1 try last
  shift
  for try in $(seq 1 120); do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" >>"$log" 2>&1; then
      return 0
    fi
    last=$(tail -n 3 "$log")
    [[ ${last,,} == *lock* ]] || return 1
    ((try == 1)) && lib_say "apt is busy elsewhere (a lock is held); waiting for it ..."
    sleep 5
  done
  return 1
}
lib_apt_install() {
  lib_need_root "installing $*"
  lib_have apt-get || lib_die "cannot install $*: apt-get not found (this script targets Debian)." \
    "Fix: install $* with your distribution's package manager."
  local log=${LIB_APT_LOG:-$(lib_log_dir)/taskledger-apt.log} t0=$SECONDS
  lib_say "installing $* with apt-get (log: $log) ..."
  if ((_LIB_APT_UPDATED == 0)); then
    if ! _lib_apt "$log" update; then
      tail -n 15 "$log" >&2 || true
      lib_die "apt-get update failed (see $log)." "Fix: check the apt sources / package mirror reachability, then rerun."
    fi
    _LIB_APT_UPDATED=1
  fi
  if ! _lib_apt "$log" install -y -q --no-install-recommends "$@"; then
    tail -n 15 "$log" >&2 || true
    lib_die "apt-get install $* failed (see $log)." "Fix: resolve the apt error above, or install $* manually, then rerun."
  fi
  lib_say "installed $* in $((SECONDS - t0))s"
}
