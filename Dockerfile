# syntax=docker/dockerfile:1
# One image for the operator and every workload role: two binaries, `artstore` and
# `artstore-operator`, plus the `kubectl-artstore` plugin to copy out
# (`docker cp $(docker create artstore:dev):/usr/local/bin/kubectl-artstore .`), on an empty
# base, running as a non-root user.
#   docker build -t artstore:dev .
# The operator's chart runs /usr/local/bin/artstore-operator; the workloads the operator
# creates run `artstore <role> <command>`.
#
# Where the binaries come from is the BINARIES stage:
#   compiled (default)  built here as static musl binaries (needs the rust image: kind, CI with Docker)
#   prebuilt            a root file system made beforehand on the build machine, given as the
#                       build context (scripts/images.sh: glibc binaries with the libraries they
#                       link, the CA bundle and /tmp), for machines without any registry:
#                       buildah bud --build-arg BINARIES=prebuilt -f Dockerfile <context>
# Both stages put the image's whole file system under /out; the last stage is the same for both.
ARG BINARIES=compiled

FROM rust:1.95-bookworm AS compiled
ARG TARGETARCH
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# The workspace's mold linker setting is for development machines; the image links with
# musl-gcc. Migrations are embedded in the binary (sqlx::migrate!), so nothing else is copied.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    rm -f .cargo/config.toml \
    && target="$(cat /rust-target)" \
    && cargo build --release --locked --target "$target" \
       -p artstore -p artstore-operator -p kubectl-artstore \
       --bin artstore --bin artstore-operator --bin kubectl-artstore \
    && mkdir -p /out/usr/local/bin /out/tmp /out/etc/ssl/certs \
    && cp "target/$target/release/artstore" "target/$target/release/artstore-operator" \
          "target/$target/release/kubectl-artstore" /out/usr/local/bin/ \
    && for b in /out/usr/local/bin/*; do \
         if file "$b" | grep -q 'dynamically linked'; then echo "$b is not static" >&2; exit 1; fi; \
       done \
    # The ingester spools large uploads to a temporary file.
    && chmod 1777 /out/tmp \
    # Root certificates for S3 and Redis over TLS.
    && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

FROM scratch AS prebuilt
COPY rootfs/ /out/

FROM ${BINARIES} AS binaries

FROM scratch
COPY --from=binaries /out/ /
# The operator starts workload containers with the command `artstore` (looked up in PATH).
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/artstore"]
