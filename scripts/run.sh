#!/usr/bin/env bash
# scripts/run.sh — run the taskledger service locally, doing its real job
# (the README's "run the service").
#
#   scripts/run.sh [SERVE ARGS...]      e.g. scripts/run.sh --listen 127.0.0.1:9090
#
# 1. scripts/services.sh: PostgreSQL, RabbitMQ and the Docker engine (installed
#    and started where missing), and the images of the shipped task kinds
#    (scripts/images.sh: built locally, cached; no registry needed). Not
#    the test Slurm cluster: no task kind runs on Slurm yet (--skip-slurm).
# 2. builds the release binary and links it as /usr/local/bin/taskledger
#    (or ~/.local/bin when that is not writable), so `taskledger keys create …`
#    works from any shell; the path is printed either way.
# 3. runs `taskledger serve` with:
#    - AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f when RabbitMQ answers
#      there and AMQP_URL is unset (without a broker jobs pass in-process,
#      which the script says loudly);
#    - the shipped default configuration (config/taskledger.toml: kinds
#      `demo`, `batch`, `page-analysis`, `url-analysis`) unless
#      TASKLEDGER_CONFIG names another;
#    - DATABASE_URL left alone: unset means
#      postgres://postgres@127.0.0.1:5432/taskledger (created on first start).
# On first start against an empty database the service prints the command
# that makes the first admin key.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'run.sh: %s\n' "$*"; }

bash scripts/services.sh --skip-image --skip-slurm </dev/null

say "building the release binary (cargo build --release; the first build takes a few minutes) ..."
cargo build --release --bin taskledger
binary=$(pwd)/target/release/taskledger
link=""
for dir in /usr/local/bin "$HOME/.local/bin"; do
  if mkdir -p "$dir" 2>/dev/null && [[ -w $dir ]] && ln -sfn "$binary" "$dir/taskledger" 2>/dev/null; then
    link=$dir/taskledger
    break
  fi
done
if [[ -n $link ]]; then
  say "taskledger is on PATH as $link -> $binary"
  case ":$PATH:" in *":$(dirname "$link"):"*) ;; *) say "WARNING: $(dirname "$link") is not on your PATH; add it or call $binary" ;; esac
else
  say "could not link taskledger into a PATH directory; call it as $binary"
fi

amqp_ready() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    head -c 1 <&3 | od -An -tx1' 2>/dev/null | grep -q 01
}
if [[ -z ${AMQP_URL:-} ]]; then
  if amqp_ready; then
    export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
    say "jobs go through RabbitMQ at 127.0.0.1:5672 (AMQP_URL=$AMQP_URL)"
  else
    say "WARNING: RabbitMQ does not answer on 127.0.0.1:5672: jobs pass IN-PROCESS (one process only)"
  fi
fi

listen=${TASKLEDGER_LISTEN:-127.0.0.1:8080}
prev=""
for arg in "$@"; do
  case $arg in
    --listen=*) listen=${arg#--listen=} ;;
    *) [[ $prev == --listen ]] && listen=$arg ;;
  esac
  prev=$arg
done
say "taskledger will listen on http://$listen (set TASKLEDGER_LISTEN or --listen to change)"
say "kinds: ${TASKLEDGER_CONFIG:-the shipped config/taskledger.toml}; try: taskledger keys create --name admin --scopes admin --all-tenants"

exec "$binary" serve "$@"
