# Multi-stage build: compile in the Rust image, run in distroless as a non-root user.
# No OAuth secret is baked in: keys, passwords and the config are mounted at run time.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/portvakt

# cc: glibc and libgcc only (portvakt links no OpenSSL); nonroot: uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portvakt /usr/local/bin/portvakt
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/portvakt"]
CMD ["run", "--config", "/etc/portvakt/portvakt.yaml"]
