# One image for the operator and every workload role: two static binaries, no shell, non-root.
#   docker build -t artstore:dev .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The workspace's mold linker setting is for development machines; the image links with musl-gcc.
RUN rm -f .cargo/config.toml \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
       -p artstore -p artstore-operator --bin artstore --bin artstore-operator \
    && mkdir /out \
    && cp target/x86_64-unknown-linux-musl/release/artstore target/x86_64-unknown-linux-musl/release/artstore-operator /out/

FROM scratch
COPY --from=build /out/artstore /out/artstore-operator /usr/local/bin/
# Root certificates for S3 and Redis over TLS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/artstore"]
