#!/usr/bin/env bash
# scripts/pytools.sh — the Python tools the OpenAPI tests run, in a cached venv.
#
#   openapi-spec-validator, schemathesis and openapi-python-client (and every
#   package they pull in), at the versions pinned in scripts/pytools.txt
#
# Idempotent: the venv is keyed by a hash of scripts/pytools.txt and the Python
# version, and left alone when it already holds exactly those pins (a stamp file
# written after a complete install), so a second run costs well under a second.
# Concurrent runs (two worktrees, CI) wait for each other on a lock.
#
# Usage:   scripts/pytools.sh           prints the venv's bin directory, alone on the
#                                       last line of standard output (progress goes to
#                                       standard error)
#          TASKLEDGER_PYTOOLS=$(scripts/pytools.sh) cargo test --test it openapi::
#
# Environment:
#   TASKLEDGER_PYTOOLS_DIR   where the venvs live (default /var/cache/taskledger/pytools
#                            when it can be created, else .cache/pytools in the repo)
#   PYTHON                   the interpreter to build the venv from (default python3)
#
# Needs Python 3.9+ with the venv module (Debian: python3-venv, installed with apt-get
# when missing and running as root) and a reachable package index for pip.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PINS="$ROOT/scripts/pytools.txt"
PYTHON=${PYTHON:-python3}

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
LIB_NAME=pytools LIB_SELF=$ROOT/scripts/pytools.sh
# Progress goes to standard error: standard output is the bin directory alone.
say() { lib_say "$@" >&2; }

[[ -f $PINS ]] || lib_die "$PINS is missing."

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
  lib_die "$PYTHON is not Python 3.9 or newer (found: $("$PYTHON" --version 2>&1 || echo none))." \
    "Fix: install python3 (Debian: apt-get install python3 python3-venv), or set PYTHON."
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if lib_is_root && lib_have apt-get; then
    say "the venv module is missing"
    lib_apt_install python3-venv >&2
  fi
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    lib_die "$PYTHON has no venv module." "Fix: apt-get install python3-venv (Debian), or set PYTHON."
fi

if [[ -n ${TASKLEDGER_PYTOOLS_DIR:-} ]]; then
  BASE=$TASKLEDGER_PYTOOLS_DIR
elif mkdir -p /var/cache/taskledger/pytools 2>/dev/null && [[ -w /var/cache/taskledger/pytools ]]; then
  BASE=/var/cache/taskledger/pytools
else
  BASE="$ROOT/.cache/pytools"
fi
mkdir -p "$BASE"

# The pins and the interpreter decide the venv; anything else would be a different one.
KEY=$({
  cat "$PINS"
  "$PYTHON" -c 'import sys; print(sys.version)'
} | sha256sum | cut -c1-16)
VENV="$BASE/$KEY"
STAMP="$VENV/.taskledger-pins"

installed() { [[ -f $STAMP && -x $VENV/bin/schemathesis ]] && cmp -s "$STAMP" "$PINS"; }

exec 9>"$BASE/.lock"
flock 9

if installed; then
  say "up to date in $VENV"
else
  t0=$SECONDS
  say "installing the pins of scripts/pytools.txt into $VENV ..."
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$PINS" >&2 ||
    lib_die "pip could not install scripts/pytools.txt into $VENV (see above)." \
      "Fix: check that the package index answers (pip config list), then rerun."
  "$VENV/bin/python" -m pip check >&2 || lib_die "the installed tools' dependencies disagree (pip check)."
  cp "$PINS" "$STAMP"
  say "installed in $((SECONDS - t0))s"
fi

for tool in openapi-spec-validator schemathesis openapi-python-client; do
  [[ -x $VENV/bin/$tool ]] || lib_die "$VENV/bin/$tool is missing after the install."
done
say "$("$VENV/bin/schemathesis" --version 2>/dev/null | head -n 1); openapi-python-client $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("openapi-python-client"))'); openapi-spec-validator $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("openapi-spec-validator"))')"
printf '%s\n' "$VENV/bin"
