# torchwatch with the lean LibTorch set from PyPI (CPU). Build: docker build -t torchwatch .
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# LibTorch first: the layer stays cached while the code changes.
COPY scripts/setup scripts/setup
RUN PYTHON=python3.11 scripts/setup
COPY . .
RUN cargo build --release --locked \
    && cp target/release/torchwatch /usr/local/bin/torchwatch

FROM debian:bookworm-slim
# CA certificates for HTTPS webhooks, Slack, SMTP over TLS and remote datasources.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin torchwatch
# The binary's rpath points at LibTorch inside /src/.venv, so the libraries keep that path.
COPY --from=build /src/.venv/lib/python3.11/site-packages /src/.venv/lib/python3.11/site-packages
COPY --from=build /usr/local/bin/torchwatch /usr/local/bin/torchwatch
WORKDIR /app
COPY models/*.pt models/
COPY torchwatch.yaml .
COPY rules/*.yml rules/
COPY policies/*.yml policies/
# What torchwatch writes: its log file and state.dir (alert state, notification log, policy
# histories; a volume in docker-compose.yml).
RUN mkdir -p logs state && chown torchwatch:torchwatch logs state
USER torchwatch
EXPOSE 8080
# Ready = every model loaded and warmed up. bash's /dev/tcp, since the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /v2/health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["torchwatch"]
CMD ["serve", "--config", "/app/torchwatch.yaml", "--listen", "0.0.0.0:8080"]
