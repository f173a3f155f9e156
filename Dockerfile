# taskledger service image.
#
#   docker build -t taskledger:latest .
#   docker compose up -d --build     (docker-compose.yml: PostgreSQL + RabbitMQ + taskledger)
#
# Builds with BuildKit or the classic builder alike: no `# syntax=` line (that
# would fetch a frontend image from a registry) and no `RUN --mount` (the
# classic builder rejects it); the layer cache does the caching.
#
# The runner role starts task containers through a Docker engine: give the
# container one (DOCKER_HOST, or the host's /var/run/docker.sock mounted; see
# docker-compose.yml).

# ---------------------------------------------------------------- builder --
FROM rust:1-bookworm AS builder
WORKDIR /src

# 1. Dependencies only. The manifests and the lock file, with empty stand-ins
#    for every target the manifests declare, so this layer (every crate from
#    the registry, compiled) is rebuilt only when a Cargo.toml or Cargo.lock
#    changes, not on every source change. Keep the list in step with
#    `[workspace] members` and their [lib]/[[bin]]/[[test]] targets
#    (scripts/check-compose.py checks the members).
COPY Cargo.toml Cargo.lock ./
COPY events/Cargo.toml events/Cargo.toml
COPY projections/Cargo.toml projections/Cargo.toml
COPY replay/Cargo.toml replay/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN set -eu; \
    for member in . events projections replay; do \
        mkdir -p "$member/src"; : > "$member/src/lib.rs"; \
    done; \
    for member in . bench; do \
        mkdir -p "$member/src"; echo 'fn main() {}' > "$member/src/main.rs"; \
    done; \
    for member in . events projections bench; do \
        mkdir -p "$member/tests/it"; : > "$member/tests/it/main.rs"; \
    done; \
    cargo build --release --locked --bin taskledger; \
    rm -rf src tests events/src events/tests projections/src projections/tests replay/src \
        bench/src bench/tests

# 2. The real sources (everything .dockerignore lets through: the crates,
#    migrations/ and config/ embedded with include_str!). Only the service
#    binary is built; it embeds nothing from tests/, and the benchmarks
#    (bench/, `taskledger-bench`, which sign with a test key from
#    tests/fixtures/) are not built here. COPY keeps the files' own
#    modification times, which are older than the stand-ins' build: touch
#    them, or cargo would take the stand-in crates as up to date and ship an
#    empty binary.
COPY . .
RUN find src events/src projections/src replay/src bench/src -type f -exec touch {} + \
 && cargo build --release --locked --bin taskledger \
 && install -D -m 0755 target/release/taskledger /out/taskledger

# ---------------------------------------------------------------- runtime --
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user. The data dir is /var/lib/taskledger; with the host's
# Docker engine it must be a host directory mounted at the same path (the
# engine bind-mounts task inputs from it), so there is no VOLUME here: an
# anonymous volume would silently break that.
RUN groupadd --system --gid 10001 taskledger \
 && useradd --system --uid 10001 --gid taskledger --home-dir /var/lib/taskledger \
      --shell /usr/sbin/nologin taskledger \
 && install -d -o taskledger -g taskledger -m 0750 /var/lib/taskledger \
 && install -d -m 0755 /etc/taskledger

# Migrations and the default configuration are compiled into the binary.
COPY --from=builder /out/taskledger /usr/local/bin/taskledger

ENV TASKLEDGER_LISTEN=0.0.0.0:8080 \
    TASKLEDGER_DATA_DIR=/var/lib/taskledger
USER taskledger:taskledger
WORKDIR /var/lib/taskledger
EXPOSE 8080

# `taskledger health` asks GET /readyz on TASKLEDGER_LISTEN (0.0.0.0 is asked
# on loopback): exit 0 on 200, 1 otherwise. No curl needed.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["taskledger", "health"]

ENTRYPOINT ["taskledger"]
CMD ["serve"]
