# The blob-router image. `docker compose up --build` builds it (see docker-compose.yaml);
# by hand: docker build -t blob-router:local .
#
# tests/it/compose.rs reads this file (there is no Docker engine in CI): keep the build
# stage's Rust version equal to Cargo.toml's `rust-version`, the runtime stage's
# ENTRYPOINT, the fixtures copy and the /state directory in step with it.

# --- build -------------------------------------------------------------------------
FROM rust:1.89-bookworm AS build
WORKDIR /src
# The whole context (see .dockerignore): Cargo.toml names benches/ and tests/ targets,
# and src/ embeds fixtures/ with include_str!, so Cargo.toml + src/ alone do not build.
COPY . .
# Cache mounts keep the registry and the compiled dependencies between builds; the
# binary is copied out because the target/ mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin blob-router \
    && cp target/release/blob-router /usr/local/bin/blob-router

# --- runtime -----------------------------------------------------------------------
FROM debian:bookworm-slim
# CA roots for TLS from the container (the MongoDB driver itself bundles webpki roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/blob-router /usr/local/bin/blob-router
# Example configs and events: `configs import /fixtures/configs.yaml`.
COPY fixtures /fixtures
# Where the worker keeps its change stream resume token (BLOB_ROUTER_RESUME_TOKEN_FILE).
# Owned by the runtime user, so an empty named volume mounted here inherits that owner.
RUN mkdir -p /state && chown 65532:65532 /state
USER 65532:65532
# The binary's default (127.0.0.1:8080) is unreachable from outside the container.
ENV BLOB_ROUTER_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["blob-router"]
CMD ["run"]
