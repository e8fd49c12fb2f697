# syntax=docker/dockerfile:1
# Build: docker build -t portcullis .
# Run:   docker run -p 5000:5000 -p 9090:9090 -v portcullis-cache:/var/cache/portcullis portcullis
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin portcullis \
 && mkdir -p /out/var/cache/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY config/container.toml /etc/portcullis/portcullis.toml
COPY --from=build --chown=65532:65532 /out/var/cache/portcullis /var/cache/portcullis
VOLUME /var/cache/portcullis
USER 65532:65532
EXPOSE 5000 9090
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.toml"]
