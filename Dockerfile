# Portcullis: one image, one binary (`portcullis iam serve`, `portcullis gateway serve`, the CLI).
# Build:  docker build -t portcullis:dev .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-rs builds C and assembly: cmake, clang and perl are needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang perl pkg-config make \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/portcullis --create-home portcullis
COPY --from=build /out/portcullis /usr/local/bin/portcullis
USER 10001:10001
WORKDIR /var/lib/portcullis
ENV PORTCULLIS_LOG_FORMAT=json
EXPOSE 9000 9001 8080 8081
ENTRYPOINT ["portcullis"]
CMD ["iam", "serve", "--config", "/etc/portcullis/iam.toml"]
