# The README's two commands: `make run` serves the demo models, `make test` runs every check.
# Cargo's target dir lives outside the clone so a fresh clone (CI) reuses the compiled LibTorch
# wrapper instead of spending minutes rebuilding it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/torchwatch/target

# Python packages the tests use: NVIDIA's own KServe V2 client, a JSON-schema checker that
# carries the Compose Specification's schema, and Kubernetes' own schemas for the manifests.
TEST_PYTHON_PACKAGES := tritonclient[http]==2.73.0 check-jsonschema==0.39.0 kubernetes-validate==1.37.0

.PHONY: run test setup test-deps bench bench-peers soak models fuzz

setup:
	@scripts/setup

# Debian's prometheus and prometheus-alertmanager packages provide prometheus, promtool and amtool,
# which the tests run themselves (temporary config and data, 127.0.0.1 only); the packaged
# services are never used.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test-deps: setup
	@.venv/bin/python -c 'import tritonclient.http, numpy, check_jsonschema, kubernetes_validate' 2>/dev/null || \
		.venv/bin/python -m pip install --quiet --disable-pip-version-check $(foreach p,$(TEST_PYTHON_PACKAGES),'$(p)')
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v amtool >/dev/null || { \
		echo "installing Debian's prometheus and prometheus-alertmanager packages for the tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends prometheus prometheus-alertmanager; }
	@/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || { \
		echo "installing Debian's python3-aiosmtpd (the tests' SMTP server)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends python3-aiosmtpd; }

run: setup
	cargo build --release --locked
	@echo
	@echo "torchwatch is starting on http://127.0.0.1:8080 (Ctrl-C stops it)"
	@echo "  ready:     curl -s http://127.0.0.1:8080/v2/health/ready"
	@echo "  metadata:  curl -s http://127.0.0.1:8080/v2/models/mlp"
	@echo "  infer:     curl -s http://127.0.0.1:8080/v2/models/mlp/infer -d @bench/bodies/mlp-1.json"
	@echo "  logs:      logs/torchwatch.log (torchwatch logs search logs/torchwatch.log --event error_occurred)"
	@echo
	$(CARGO_TARGET_DIR)/release/torchwatch serve --config torchwatch.yaml

test: test-deps
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo test --locked

bench: setup
	cargo bench --locked --bench metrics --bench rules --bench notify --bench cache --bench decode
	bench/run

# torchwatch and the tutorial's FastAPI + prometheus_client app on the same models, load and machine
# (bench/peers --help); installs the full PyTorch set and a separate .venv-peers the first time.
bench-peers: setup
	bench/peers $(PEERS_ARGS)

# Ten minutes at saturation with mixed traffic (bench/soak --help): RSS growth, open descriptors
# and every non-2xx; SOAK_ARGS passes options, e.g. SOAK_ARGS='--duration 60'.
soak: setup
	cargo build --release --locked
	bench/soak $(SOAK_ARGS)

# Re-exports the demo models and their reference outputs (needs the full PyTorch set).
models:
	scripts/setup --full
	.venv/bin/python models/export.py

# Fuzzes every decoder and parser in fuzz/fuzz_targets, one target after another, each for
# FUZZ_SECONDS from its seeds (fuzz/seeds/TARGET) and what earlier runs kept (fuzz/corpus, not in
# git). cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# No sanitizer: the crate is safe Rust (one libc call), and ASan would halve the executions.
# The fuzz binary links LibTorch through the crate but gets no rpath, hence the library path.
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := exposition infer_json infer_binary config rule_file policy_file template promql
fuzz: setup
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target && \
		RUSTC_BOOTSTRAP=1 LD_LIBRARY_PATH=$(CURDIR)/.venv/lib/python3.11/site-packages/torch/lib \
		cargo fuzz run --sanitizer none $$target corpus/$$target seeds/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			|| exit 1; \
	done
