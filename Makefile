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
# clip-as-service's jina/docarray messages (a trimmed, vendored copy) in their own package.
JINA_PROTO_SRC := $(wildcard proto/third_party/clip_grpc/jina_v1/*.proto)
JINA_STUBS := $(foreach n,docarray jina,$(foreach s,_pb2.py _pb2.pyi _pb2_grpc.py,clip_grpc/jina_v1/$(n)$(s)))
PROTOC := $(PY) -m grpc_tools.protoc
# clip-as-service's real client, for the compatibility tests: its own venv (its pins conflict
# with ours), keyed by the pins so CI builds it once and a change of pins makes a new one.
CLIP_CLIENT_PINS := tests/compat/clip-client-requirements.txt
CLIP_CLIENT_VENV := .cache/clip-client-$(shell sha256sum $(CLIP_CLIENT_PINS) | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help venv install test-deps proto proto-check lint test screenshot run bench demo-model docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml distributions/client/pyproject.toml distributions/bridge/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ./distributions/client -e ./distributions/bridge -e '.[dev]'
	touch $@

# npm install, not npm ci: npm 11 leaves other platforms' optional buf binaries out of the lock
# file, and npm ci then refuses it as out of sync.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

venv: $(VENV)/.installed ## only the Python side: .venv with CPU torch and the three distributions

install: $(VENV)/.installed node_modules/.installed ## everything for development: .venv and node tools

proto: $(VENV)/.installed ## regenerate the Python stubs from proto/
	$(PROTOC) -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC)
	$(PROTOC) -Iproto/third_party --python_out=. --pyi_out=. --grpc_python_out=. $(JINA_PROTO_SRC)

proto-check: $(VENV)/.installed ## fail when the committed stubs differ from proto/
	@tmp=$$(mktemp -d) && \
	$(PROTOC) -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO_SRC) && \
	$(PROTOC) -Iproto/third_party --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(JINA_PROTO_SRC) && \
	for f in $(STUBS) $(JINA_STUBS); do diff -u $$f $$tmp/$$f || { echo "stale stub: $$f (run make proto)"; exit 1; }; done && \
	rm -rf $$tmp && echo "stubs up to date"

lint: $(VENV)/.installed node_modules/.installed ## ruff, buf lint, hadolint, shellcheck
	$(VENV)/bin/ruff check .
	npx --no-install buf lint
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck docker/entrypoint.sh

# Test-only tools that pip cannot bring: Debian's chromium for the playground's browser test;
# and clip-as-service's client in its own venv (~2.5 min and 335 MB the first time).
test-deps: node_modules/.installed $(CLIP_CLIENT_VENV)/.installed ## tools only the tests need (node packages, chromium, clip-client)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

$(CLIP_CLIENT_VENV)/.installed: $(CLIP_CLIENT_PINS)
	$(PYTHON) -m venv $(CLIP_CLIENT_VENV)
	$(CLIP_CLIENT_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(CLIP_CLIENT_PINS)
	touch $@

test: install test-deps proto-check lint ## proto-check, lints, then the whole test suite
	@CLIP_CLIENT_REQUIRED=1 $(VENV)/bin/pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; fi; \
	exit $$status

run: $(VENV)/.installed ## serve the demo model: gRPC on 50051, REST on 8081 (Ctrl-C stops both)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" docker/entrypoint.sh all

screenshot: install test-deps ## retake docs/playground.png (the README's picture) in headless chromium
	PLAYGROUND_SCREENSHOT=$(CURDIR)/docs/playground.png $(VENV)/bin/pytest -q tests/test_playground.py -k ranks_each

# Where the benchmark runs the model: `make bench DEVICE=cuda` on a GPU machine. BENCH_ARGS: more
# flags for `python -m bench` (see `python -m bench --help`), e.g. BENCH_ARGS="--quick".
DEVICE ?= cpu
BENCH_ARGS ?=
bench: $(VENV)/.installed ## benchmarks on DEVICE (default cpu; writes bench/results and BENCHMARKS.md)
	$(PY) -m bench --device $(DEVICE) $(BENCH_ARGS)

demo-model: $(VENV)/.installed ## retrain the shipped demo model (deterministic, ~15 min on 2 cores)
	$(PY) -m demo.train

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .cache
