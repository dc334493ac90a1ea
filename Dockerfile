# syntax=docker/dockerfile:1
# The untorn image: CSI plugin, CLI, registrar, webhook and both shim builds.
# hack/build-image.sh runs the same build steps without a container engine;
# keep the two in step.

ARG GO_VERSION=1.26
ARG DEBIAN_SUITE=bookworm

# --- build stage "go": the Go commands, static --------------------------------
FROM golang:${GO_VERSION}-${DEBIAN_SUITE} AS go
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
COPY internal/ internal/
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    for c in untorn-csi untornctl untorn-registrar untorn-webhook; do \
        CGO_ENABLED=0 go build -trimpath \
            -ldflags "-s -w -X github.com/untorn/untorn/pkg/driver.Version=${VERSION}" \
            -o /out/usr/bin/$c ./cmd/$c; \
    done

# --- build stage "shim": the preload library for glibc and musl ---------------
FROM debian:${DEBIAN_SUITE} AS shim
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pkg/atomic/shim/ shim/
RUN make -s -C shim OUT=/build glibc musl \
 && install -D -m 0644 /build/glibc/libuntorn.so /out/usr/lib/untorn/shim/glibc/libuntorn.so \
 && install -D -m 0644 /build/musl/libuntorn.so /out/usr/lib/untorn/shim/musl/libuntorn.so

# --- runtime ------------------------------------------------------------------
FROM debian:${DEBIAN_SUITE}-slim
# mkfs/fsck/resize for ext4 and xfs, losetup/blkid/mount, lvm2 for the
# production backend. Nothing else: no shell tools beyond the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends e2fsprogs xfsprogs util-linux mount lvm2 \
 && rm -rf /var/lib/apt/lists/* \
 # lvm2 inside a container: no udev to wait for, host locking dir mounted at /run/lvm
 && sed -i -E -e 's/^(\s*)#?\s*udev_sync = 1/\1udev_sync = 0/' -e 's/^(\s*)#?\s*udev_rules = 1/\1udev_rules = 0/' /etc/lvm/lvm.conf
COPY --from=go /out/ /
COPY --from=shim /out/ /
ARG VERSION=dev
RUN mkdir -p /usr/share/untorn && echo "${VERSION}" > /usr/share/untorn/version
LABEL org.opencontainers.image.title="untorn" \
      org.opencontainers.image.description="CSI driver for atomic-write volumes, with the writethrough shim" \
      org.opencontainers.image.source="https://github.com/untorn/untorn"
# The node plugin runs privileged as root (mkfs, mount, losetup, lvm); the
# controller and the webhook run as this user (the chart sets it too).
USER 65532:65532
ENTRYPOINT ["/usr/bin/untorn-csi"]
