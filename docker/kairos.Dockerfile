# syntax=docker/dockerfile:1
# The Kairos broker and admin CLI (`kairos`). Build from the repository root:
#   docker build -f docker/kairos.Dockerfile -t ghcr.io/kairos-dev/kairos:0.1.0 .
#
# The runtime keeps a shell: the operator's pods start the broker through the ConfigMap's
# start.sh, and the preStop hook waits for the controlled shutdown with `kill -0`.

FROM rust:1.95-bookworm AS build
# cmake builds librdkafka, which the CLI's produce/consume/delay commands use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kairos-broker --bin kairos \
 && install -s -D -m 0755 target/release/kairos /out/kairos

FROM debian:bookworm-slim
# The binary needs glibc, libgcc and zlib only (`ldd`: librdkafka is built without curl or
# OpenSSL), all part of bookworm-slim. ca-certificates for rediss:// Redis URLs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 kairos \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kairos \
 && install -d -o 10001 -g 10001 /var/lib/kairos
COPY --from=build /out/kairos /usr/local/bin/kairos
USER 10001:10001
WORKDIR /var/lib/kairos
# Kafka, controller (Raft), metrics/health, gRPC admin.
EXPOSE 9092 9093 9404 9095
ENTRYPOINT ["/usr/local/bin/kairos"]
CMD ["serve"]
