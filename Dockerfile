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
# The binary's rpath points at LibTorch inside /src/.venv, so the libraries keep that path.
COPY --from=build /src/.venv/lib/python3.11/site-packages /src/.venv/lib/python3.11/site-packages
COPY --from=build /usr/local/bin/torchwatch /usr/local/bin/torchwatch
WORKDIR /app
COPY models/*.pt models/
COPY torchwatch.yaml .
COPY rules/*.yml rules/
COPY policies/*.yml policies/
EXPOSE 8080
ENTRYPOINT ["torchwatch"]
CMD ["serve", "--config", "/app/torchwatch.yaml", "--listen", "0.0.0.0:8080"]
