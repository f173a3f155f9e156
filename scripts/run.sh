#!/usr/bin/env bash
# scripts/run.sh — run the taskledger service locally (the README's "run the service").
#
#   scripts/run.sh [SERVE ARGS...]      e.g. scripts/run.sh --listen 127.0.0.1:9090
#
# Brings up PostgreSQL, RabbitMQ and the Docker engine with scripts/services.sh
# (--skip-image: the test image is only for the test suite), then runs
#   cargo run --release --bin taskledger -- serve [SERVE ARGS...]
#
# DATABASE_URL is deliberately left alone: when it is unset the service uses
# postgres://postgres@127.0.0.1:5432/taskledger and creates that database itself.
# Other settings come from the environment (AMQP_URL, TASKLEDGER_LISTEN,
# TASKLEDGER_DATA_DIR, TASKLEDGER_LOG, ...) or flags; see `taskledger serve --help`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/services.sh --skip-image </dev/null

listen=${TASKLEDGER_LISTEN:-127.0.0.1:8080}
prev=""
for arg in "$@"; do
  case $arg in
    --listen=*) listen=${arg#--listen=} ;;
    *) [[ $prev == --listen ]] && listen=$arg ;;
  esac
  prev=$arg
done
printf 'run.sh: taskledger will listen on http://%s (set TASKLEDGER_LISTEN or --listen to change)\n' "$listen"

exec cargo run --release --bin taskledger -- serve "$@"
