# syntax=docker/dockerfile:1
# Foresight controller image: a static musl binary on distroless/static (no shell, no libc).
# Build: docker build -t ghcr.io/foresight-autoscaler/foresight:0.1.0 .

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io index and the build tree across builds; the binary is
# copied out of the cached target dir because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin foresight --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/foresight /foresight

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /foresight /foresight
# The numeric UID/GID of distroless' "nonroot" user; the Helm chart's runAsUser matches it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/foresight"]
CMD ["run"]
