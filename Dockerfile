# The operator image: a static (musl) binary on distroless, running as non-root, plus the built
# join page that `conclave web` serves for LiveKit Bridges (/usr/share/conclave/web).
#
#   docker build -t ghcr.io/conclave-dev/conclave:0.1.0 .
#
# The Deployment in deploy/ and the Helm chart run it with a read-only root filesystem; the
# operator writes nothing to disk.

# The join page: TypeScript and livekit-client bundled by esbuild into static files. Only this
# stage needs node; `cargo build` does not.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:1-bookworm AS build
# musl-tools provides musl-gcc, which ring's C and assembly parts are compiled with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target matches the build machine's architecture (x86_64 or aarch64), so one Dockerfile
# serves both platforms of a multi-platform build without cross compilers.
RUN target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && cargo build --release --locked --target "$target" --bin conclave \
 && cp "target/$target/release/conclave" /conclave

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /conclave /conclave
COPY --from=web /web/dist /usr/share/conclave/web
# distroless's nonroot user; the Deployment's runAsUser/runAsGroup say the same.
USER 65532:65532
ENTRYPOINT ["/conclave"]
CMD ["run"]
