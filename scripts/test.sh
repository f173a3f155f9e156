#!/usr/bin/env bash
# scripts/test.sh — taskledger's one test command (CI runs exactly this, via .ci/run).
#
#   1. services   scripts/services.sh: PostgreSQL, RabbitMQ, Docker + the offline
#                 test image taskledger-test-busybox:latest
#   2. toolchain  rustfmt and clippy present (rustup component add only if missing),
#                 python3 present (apt-get install only if missing)
#   3. pytools    scripts/pytools.sh: the pinned Python tools of the OpenAPI tests
#                 (openapi-spec-validator, schemathesis, openapi-python-client) in a
#                 cached venv, exported to the tests as TASKLEDGER_PYTOOLS
#   4. browser    scripts/browser.sh: Debian's chromium (apt-get install only if missing)
#                 and the pinned playwright-core of tests/console/ in a cached directory,
#                 exported to the console's browser test as TASKLEDGER_PLAYWRIGHT
#   5. cleanup    drop leftover tl_test_* databases from interrupted runs (those
#                 no session is connected to, so a suite running beside keeps its own)
#                 (tl_template_* templates are kept)
#   6. fmt        cargo fmt --all -- --check
#   7. clippy     cargo clippy --workspace --all-targets -- -D warnings
#   8. test       cargo test --workspace [ARGS...]
#
# Stops at the first failing phase. Extra arguments go to cargo test, e.g.
#   scripts/test.sh -- --nocapture
#   scripts/test.sh -p taskledger-events
#
# Environment (defaults shown), exported to the tests:
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
#   TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#   TASKLEDGER_TEST_IMAGE=taskledger-test-busybox:latest
#   TASKLEDGER_PYTOOLS=<the venv's bin directory>   (set by the pytools phase)
#   TASKLEDGER_PLAYWRIGHT=<playwright-core's directory>   (set by the browser phase)
#   CARGO_TERM_COLOR=never when CI is set
# Non-interactive: safe with CI=true and no stdin.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export TEST_AMQP_URL=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export TASKLEDGER_TEST_IMAGE=taskledger-test-busybox:latest
if [[ -n ${CI:-} ]]; then
  export CARGO_TERM_COLOR=never # (rustfmt's diff colour is switched off below)
fi

say() { printf 'test.sh: %s\n' "$*"; }

# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh" # lib_now, lib_took

T_START=$(lib_now)
TIMINGS=()

# phase NAME COMMAND...: banner, run, record the duration; stop the script on failure.
phase() {
  local name=$1 t0 rc=0
  shift
  printf '\n==== test.sh: [%s] %s\n' "$name" "$*"
  t0=$(lib_now)
  "$@" </dev/null || rc=$?
  local took
  took=$(lib_took "$t0")
  TIMINGS+=("$(printf '%-10s %s' "$name" "$took")")
  if ((rc != 0)); then
    printf '\n' >&2
    say "FAILED in phase '$name' after $took (exit $rc): $*" >&2
    say "total $(lib_took "$T_START")" >&2
    exit "$rc"
  fi
  say "[$name] ok in $took"
}

start_services() {
  # Sourced (see its header) so that TASKLEDGER_DOCKER_BIN — the docker client
  # that can talk to the daemon — is exported to the tests as well.
  # shellcheck source=scripts/services.sh
  source "$ROOT/scripts/services.sh"
}

ensure_toolchain() {
  # lib_apt_install's messages name this script (services.sh, sourced in
  # the phase before, set its own name).
  local LIB_NAME=test.sh LIB_SELF=$ROOT/scripts/test.sh
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if ((${#missing[@]})); then
    say "installing missing toolchain components: ${missing[*]}"
    rustup component add "${missing[@]}"
  fi
  # tests/it/mirror.rs runs scripts/verify-chain.py (standard library only).
  if ! command -v python3 >/dev/null 2>&1; then
    say "installing python3 with apt-get (tests/it/mirror.rs runs scripts/verify-chain.py)"
    lib_apt_install python3
  fi
  # tests/it/deploy.rs validates docker-compose.yml with a real Compose CLI:
  # the plugin if present, else Debian's docker-compose (1.29).
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    say "installing Debian's docker-compose with apt-get (tests/it/deploy.rs validates docker-compose.yml)"
    lib_apt_install docker-compose
  fi
  say "$(rustc --version); $(cargo fmt --version); $(cargo clippy --version); $(python3 --version)"
}

install_pytools() {
  # Not `set -e` territory: phase runs this in an `||` list.
  local bin
  bin=$(bash "$ROOT/scripts/pytools.sh") || return
  export TASKLEDGER_PYTOOLS=$bin
  say "TASKLEDGER_PYTOOLS=$TASKLEDGER_PYTOOLS"
}

install_browser() {
  local dir
  dir=$(bash "$ROOT/scripts/browser.sh") || return
  export TASKLEDGER_PLAYWRIGHT=$dir
  say "TASKLEDGER_PLAYWRIGHT=$TASKLEDGER_PLAYWRIGHT"
}

drop_stale_test_databases() {
  local -a psql=(psql -X -w -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres)
  # Only databases nobody is connected to: a suite running beside this one
  # (another checkout, another session) keeps its own.
  local sel="FROM pg_database d WHERE d.datname LIKE 'tl\\_test\\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)"
  local names
  names=$(PGCONNECT_TIMEOUT=10 "${psql[@]}" -Atc "SELECT datname $sel ORDER BY datname")
  if [[ -z $names ]]; then
    say "no leftover tl_test_* databases"
    return 0
  fi
  say "dropping $(wc -l <<<"$names") leftover test database(s): $(paste -sd' ' <<<"$names")"
  # \gexec runs each generated statement on its own (DROP DATABASE cannot run in a transaction).
  printf '%s\n' "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) $sel \\gexec" |
    PGCONNECT_TIMEOUT=10 "${psql[@]}"
}

say "repo root $ROOT"
say "TEST_DATABASE_URL=$TEST_DATABASE_URL"
say "TEST_AMQP_URL=$TEST_AMQP_URL"
say "TASKLEDGER_TEST_IMAGE=$TASKLEDGER_TEST_IMAGE${CI:+ (CI=$CI, CARGO_TERM_COLOR=never)}"

phase services start_services
phase toolchain ensure_toolchain
phase pytools install_pytools
phase browser install_browser
phase cleanup drop_stale_test_databases
FMT_COLOR=()
if [[ -n ${CI:-} ]]; then FMT_COLOR=(--color never); fi # rustfmt ignores CARGO_TERM_COLOR
phase fmt cargo fmt --all -- --check "${FMT_COLOR[@]}"
phase clippy cargo clippy --workspace --all-targets -- -D warnings
phase test cargo test --workspace "$@"

printf '\n'
say "phase timings:"
for t in "${TIMINGS[@]}"; do printf '  %s\n' "$t"; done
printf '  %-10s %s\n' total "$(lib_took "$T_START")"
say "all checks passed"
