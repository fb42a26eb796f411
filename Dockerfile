# Builds aupd and aupctl into a small image (distroless static, no shell).
# The build stamps the version, revision and build date that `aupd version`,
# `aupctl --version` and aupd_build_info report; scripts/release and
# docker-compose.yml pass them:
#   docker build --build-arg VERSION=$(git describe --tags) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%FT%TZ) .
# Without them the image says version (devel), revision unknown (.git is
# not in the build context).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG REVISION=""
ARG BUILD_DATE=""
RUN pkg=github.com/aupd/aupd/internal/buildinfo && \
    ldflags="-s -w -X $pkg.version=$VERSION -X $pkg.revision=$REVISION -X $pkg.buildDate=$BUILD_DATE" && \
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o /out/aupd ./cmd/aupd && \
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o /out/aupctl ./cmd/aupctl && \
    /out/aupd version

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=""
ARG REVISION=""
ARG BUILD_DATE=""
LABEL org.opencontainers.image.title="aupd" \
      org.opencontainers.image.description="abuse and spam suspension service for mail providers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$BUILD_DATE"
COPY --from=build /out/aupd /out/aupctl /usr/local/bin/
USER nonroot
EXPOSE 9390 10040 10041
ENTRYPOINT ["/usr/local/bin/aupd"]
CMD ["-config", "/etc/aupd/aupd.yml"]
