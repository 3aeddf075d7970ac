# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in distroless as a non-root user. Both bases
# are build arguments, so that where the public images cannot be pulled the same file builds on
# bases made from Debian's packages (scripts/image.sh, docs/deployment.md).
# No OAuth secret is baked in: keys, passwords and the config are mounted at run time
# (docs/deployment.md). The root filesystem can be read-only: portvakt writes nothing but logs
# to stderr. Built, run and measured in CI: scripts/image.sh.
ARG BUILD_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Cargo.toml, Cargo.lock, src/ and docs/configuration.md (`portvakt schema` describes each key from
# the configuration reference): .dockerignore lets in nothing else.
COPY . .
RUN cargo build --release --locked && strip target/release/portvakt

# cc: glibc and libgcc only (portvakt links no OpenSSL); nonroot: uid 65532.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="portvakt" \
      org.opencontainers.image.description="Authenticating egress proxy for Maskinporten" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /src/target/release/portvakt /usr/local/bin/portvakt
USER nonroot:nonroot
EXPOSE 8080 9090
# Distroless has no shell or curl: portvakt asks its own admin listener (admin_listen must be
# 127.0.0.1:9090 or 0.0.0.0:9090, or set PORTVAKT_HEALTH_URL).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/portvakt", "health"]
ENTRYPOINT ["/usr/local/bin/portvakt"]
CMD ["run", "--config", "/etc/portvakt/portvakt.yaml"]
