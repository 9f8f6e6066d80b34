# syntax=docker/dockerfile:1
#
# One Dockerfile for every blobref service, and for blobrefctl (the image of
# the `blobrefctl setup` step that compose and the Kubernetes Job run):
#
#   docker build --build-arg SERVICE=blobwriter -t blobref/blobwriter .
#   docker build --build-arg SERVICE=refwriter --build-arg METRICS_PORT=9102 -t blobref/refwriter .
#   docker build --build-arg SERVICE=ingest --build-arg METRICS_PORT=9100 -t blobref/ingest .
#   docker build --build-arg SERVICE=notifier --build-arg METRICS_PORT=9103 -t blobref/notifier .
#   docker build --build-arg SERVICE=blobrefctl -t blobref/blobrefctl .
#
# (ingest's API listens on HTTP_ADDR, :8080 by default, besides the metrics port.)
#
# The build command is `make build`'s (same flags, same package paths:
# services/<name>, else tools/<name>): release binaries, with every blob
# driver, without the failpoints that test builds compile in (-tags
# blobref_failpoints), and without cloud.google.com/go/storage's DirectPath
# gRPC dependencies (-tags disable_grpc_modules; see the Makefile). A test
# in tools/devstack/internal/deploycheck keeps the two in step.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
ARG SERVICE
WORKDIR /src
# The whole workspace: go.work names every module, so all of them must be
# here even though one service uses only some (.dockerignore trims the rest).
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    pkg="services/${SERVICE}" && { test -f "${pkg}/main.go" || pkg="tools/${SERVICE}"; } \
    && test -n "${SERVICE}" && test -f "${pkg}/main.go" \
      || { echo "build with --build-arg SERVICE=<a directory under services/, or blobrefctl>" >&2; exit 1; } \
    && CGO_ENABLED=0 go build -trimpath -tags disable_grpc_modules -ldflags='-s -w' -o /out/service "./${pkg}"

FROM gcr.io/distroless/static-debian12:nonroot
ARG SERVICE
# METRICS_PORT is where /metrics, /healthz and /readyz listen in the image.
ARG METRICS_PORT=9101
LABEL org.opencontainers.image.title="blobref-${SERVICE}"
COPY --from=build /out/service /usr/local/bin/service
ENV METRICS_ADDR=:${METRICS_PORT}
USER nonroot:nonroot
EXPOSE ${METRICS_PORT}
ENTRYPOINT ["/usr/local/bin/service"]
