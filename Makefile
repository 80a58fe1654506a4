# Everything runs from the project's own virtual environment (.venv), made by `make install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Where pip finds torch. Empty: the default index (the CI machines keep a CPU build on disk);
# elsewhere, for the small CPU build: TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PROTO_SRC := proto/clip_grpc/v1/clip.proto
STUBS := clip_grpc/v1/clip_pb2.py clip_grpc/v1/clip_pb2.pyi clip_grpc/v1/clip_pb2_grpc.py

.DEFAULT_GOAL := help
.PHONY: help install test-deps proto proto-check lint test screenshot run bench demo-model docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# npm install, not npm ci: npm 11 leaves other platforms' optional buf binaries out of the lock
# file, and npm ci then refuses it as out of sync.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed ## create .venv (CPU torch) and node tools

proto: $(VENV)/.installed ## regenerate the Python stubs from proto/
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC)

proto-check: $(VENV)/.installed ## fail when the committed stubs differ from proto/
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO_SRC) && \
	for f in $(STUBS); do diff -u $$f $$tmp/$$f || { echo "stale stub: $$f (run make proto)"; exit 1; }; done && \
	rm -rf $$tmp && echo "stubs up to date"

lint: install ## ruff, buf lint, hadolint, shellcheck
	$(VENV)/bin/ruff check .
	npx --no-install buf lint
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck docker/entrypoint.sh

# Test-only tools that pip cannot bring: Debian's chromium for the playground's browser test.
test-deps: node_modules/.installed ## tools only the tests need (node packages, chromium)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: install test-deps proto-check lint ## proto-check, lints, then the whole test suite
	@$(VENV)/bin/pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; fi; \
	exit $$status

run: install ## serve the demo model: gRPC on 50051, REST on 8081 (Ctrl-C stops both)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" docker/entrypoint.sh all

screenshot: install test-deps ## retake docs/playground.png (the README's picture) in headless chromium
	PLAYGROUND_SCREENSHOT=$(CURDIR)/docs/playground.png $(VENV)/bin/pytest -q tests/test_playground.py -k ranks_each

bench: install ## benchmarks (writes bench/results and BENCHMARKS.md)
	$(PY) -m bench

demo-model: install ## retrain the shipped demo model (deterministic, ~15 min on 2 cores)
	$(PY) -m demo.train

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
