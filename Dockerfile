# syntax=docker/dockerfile:1
# taskledger service image.
#
#   docker build -t taskledger .
#   docker compose up          (see docker-compose.yml: PostgreSQL + RabbitMQ + taskledger)
#
# The runner role starts task containers through a Docker engine: give the
# container one (DOCKER_HOST, or a mounted /var/run/docker.sock) when you need it.

# ---------------------------------------------------------------- builder --
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace (see .dockerignore); Cargo.lock pins every dependency.
COPY . .
RUN cargo build --release --locked --bin taskledger \
 && install -D -m 0755 target/release/taskledger /out/taskledger

# ---------------------------------------------------------------- runtime --
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user; artifacts live in /var/lib/taskledger (a volume in compose).
RUN groupadd --system --gid 10001 taskledger \
 && useradd --system --uid 10001 --gid taskledger --home-dir /var/lib/taskledger \
      --shell /usr/sbin/nologin taskledger \
 && install -d -o taskledger -g taskledger -m 0750 /var/lib/taskledger

COPY --from=builder /out/taskledger /usr/local/bin/taskledger

ENV TASKLEDGER_LISTEN=0.0.0.0:8080 \
    TASKLEDGER_DATA_DIR=/var/lib/taskledger
USER taskledger:taskledger
WORKDIR /var/lib/taskledger
VOLUME ["/var/lib/taskledger"]
EXPOSE 8080

# No HEALTHCHECK: the slim image has no HTTP client (curl/wget) to probe with.
ENTRYPOINT ["taskledger"]
CMD ["serve"]
