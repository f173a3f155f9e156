#!/usr/bin/env bash
# scripts/browser.sh — what the console's browser tests (tests/it/console.rs) need:
#
#   Debian's chromium at /usr/bin/chromium, node and npm (apt-get install when missing,
#   as root), and playwright-core at the version pinned in tests/console/package.json
#   and package-lock.json, installed with `npm ci` into a cached directory
#
# Idempotent: the directory is keyed by a hash of the two pin files and node's version,
# and left alone when it already holds them (a stamp written after a complete install),
# so a second run costs well under a second. Concurrent runs wait on a lock.
#
# Usage:   scripts/browser.sh        prints the directory holding node_modules/, alone on
#                                    the last line of standard output (progress goes to
#                                    standard error)
#          TASKLEDGER_PLAYWRIGHT=$(scripts/browser.sh) cargo test --test it console::
#
# Environment:
#   TASKLEDGER_BROWSER_DIR   where the installs live (default /var/cache/taskledger/browser
#                            when it can be created, else .cache/browser in the repo)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PINS_DIR="$ROOT/tests/console"

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
LIB_NAME=browser LIB_SELF=$ROOT/scripts/browser.sh
# Progress goes to standard error: standard output is the directory alone.
say() { lib_say "$@" >&2; }

for pin in package.json package-lock.json; do
  [[ -f $PINS_DIR/$pin ]] || lib_die "$PINS_DIR/$pin is missing."
done

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
lib_have node || missing+=(nodejs)
lib_have npm || missing+=(npm)
if ((${#missing[@]})); then
  say "missing: ${missing[*]}"
  lib_apt_install "${missing[@]}" >&2
fi
[[ -x /usr/bin/chromium ]] || lib_die "/usr/bin/chromium is missing after the install."

if [[ -n ${TASKLEDGER_BROWSER_DIR:-} ]]; then
  BASE=$TASKLEDGER_BROWSER_DIR
elif mkdir -p /var/cache/taskledger/browser 2>/dev/null && [[ -w /var/cache/taskledger/browser ]]; then
  BASE=/var/cache/taskledger/browser
else
  BASE="$ROOT/.cache/browser"
fi
mkdir -p "$BASE"

KEY=$({
  cat "$PINS_DIR/package.json" "$PINS_DIR/package-lock.json"
  node --version
} | sha256sum | cut -c1-16)
DIR="$BASE/$KEY"
STAMP="$DIR/.taskledger-pins"

installed() {
  [[ -f $STAMP && -f $DIR/node_modules/playwright-core/package.json ]] &&
    cmp -s "$STAMP" "$PINS_DIR/package-lock.json"
}

exec 9>"$BASE/.lock"
flock 9

if installed; then
  say "up to date in $DIR"
else
  t0=$SECONDS
  say "installing the pins of tests/console/package-lock.json into $DIR ..."
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cp "$PINS_DIR/package.json" "$PINS_DIR/package-lock.json" "$DIR/"
  # --ignore-scripts: nothing downloads a browser of its own; the tests use Debian's.
  (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
    lib_die "npm could not install tests/console/package-lock.json into $DIR (see above)." \
      "Fix: check that the package registry answers (npm config list), then rerun."
  cp "$PINS_DIR/package-lock.json" "$STAMP"
  say "installed in $((SECONDS - t0))s"
fi

say "$(/usr/bin/chromium --version 2>/dev/null | head -n 1); node $(node --version); playwright-core $(node -p "require('$DIR/node_modules/playwright-core/package.json').version")"
printf '%s\n' "$DIR"
