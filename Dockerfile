# Builds aupd and aupctl into a small image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/aupd ./cmd/aupd && \
    CGO_ENABLED=0 go build -trimpath -o /out/aupctl ./cmd/aupctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aupd /out/aupctl /usr/local/bin/
USER nonroot
EXPOSE 9390 10040 10041
ENTRYPOINT ["/usr/local/bin/aupd"]
CMD ["-config", "/etc/aupd/aupd.yml"]
