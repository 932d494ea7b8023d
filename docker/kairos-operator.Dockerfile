# syntax=docker/dockerfile:1
# The Kubernetes operator (`kairos-operator`). Build from the repository root:
#   docker build -f docker/kairos-operator.Dockerfile -t ghcr.io/kairos-dev/kairos-operator:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kairos-operator --bin kairos-operator \
 && install -s -D -m 0755 target/release/kairos-operator /out/kairos-operator

# The binary needs glibc and libgcc only (`ldd`; TLS is rustls): distroless/cc, no shell,
# user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/kairos-operator /usr/local/bin/kairos-operator
USER 65532:65532
# /metrics and /healthz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kairos-operator"]
CMD ["run"]
