# Every target uses the project's own virtualenv in .venv/, created by `make install`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK         := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock
# For every platform, from Python 3.11 up, with hashes: one file serves every machine.
UV_COMPILE := --quiet --universal --python-version 3.11 --generate-hashes

.PHONY: install lock run test test-fast lint fmt clean env

install: $(STAMP)

# Every dependency at the version and hashes in the lock, then the project itself (no
# dependency resolution of its own, so nothing unpinned slips in).
$(STAMP): pyproject.toml clients/python/pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip install --quiet --no-deps -e clients/python
	touch $(STAMP)

## Pin every dependency again after changing pyproject.toml: $(LOCK) holds the runtime
## and the dev and embedded extras (make install, CI), $(RUNTIME_LOCK) the runtime alone
## at the same versions (images). Pins already in the lock are kept where they still fit;
## LOCK_ARGS=--upgrade moves everything to the newest allowed.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.5,<1'
	$(BIN)/uv pip compile $(UV_COMPILE) $(LOCK_ARGS) --extra dev --extra embedded -o $(LOCK) pyproject.toml
	$(BIN)/uv pip compile $(UV_COMPILE) -c $(LOCK) -o $(RUNTIME_LOCK) pyproject.toml

## The whole system in one process on embedded defaults: http://127.0.0.1:8080/
run: $(STAMP)
	$(BIN)/darkroom dev

## The whole suite. Uses RabbitMQ, PostgreSQL and Redis on 127.0.0.1 when they run
## (skipped with a reason otherwise; with CI=true a missing server fails the run), and
## starts service processes and server nodes of its own.
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## The fast tier, under a minute: in-process broker, SQLite and moto only; no server,
## no subprocess, nothing marked slow (markers: see pyproject.toml, tests/conftest.py).
## pytest exits 5 when the selection holds no test (say, PYTEST_ARGS=tests/test_store.py
## -k postgres): nothing of the tier to run is not a failure.
FAST := not rabbitmq and not postgres and not redis and not processes and not slow
test-fast: $(STAMP)
	$(BIN)/pytest -m "$(FAST)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

## `alembic check` runs against a throw-away SQLite database brought to the newest
## revision: it fails when shared/tables.py and the migrations disagree.
## The deploy files are checked offline too: the compose file against the compose-spec
## schema (vendored by check-jsonschema), and every kustomize build (dev, aws, the
## HPA variant) with `kubectl kustomize`, core objects with `kubernetes-validate --strict`,
## KEDA and Prometheus Operator objects against their CRD schemas; the alert rules and
## the dashboard name only metrics Darkroom exports (tests/test_manifests.py,
## tests/test_deploy.py, tests/test_observability.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m shared.migrations check
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	CI=true $(BIN)/pytest -q tests/test_manifests.py tests/test_deploy.py tests/test_kubernetes.py tests/test_observability.py

## Strong random credentials for compose (deploy/.env), RabbitMQ's users
## (deploy/rabbitmq/definitions.json) and the dev overlay's Secrets; keeps existing ones.
env: $(STAMP)
	$(BIN)/python deploy/make_env.py

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .darkroom .pytest_cache .mypy_cache .ruff_cache *.egg-info

## Gateway (grants and listings against an empty aiohttp handler, on RabbitMQ and
## PostgreSQL; wrk when installed) and pipeline (stored to ready against raw render())
## figures, render() CPU by image size for the capacity table, then thumbnails: thread vs process pool, render() against naive Pillow and
## libvips (pyvips) on generated 12/24 MP photos, and the render memory peak at the pixel
## limit against the budget. See docs/performance.md and docs/thumbnails.md.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

.PHONY: bench
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.capacity
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.thumbnails
	$(BIN)/python -m bench.memory

## Fault injection against the real pipeline (one process per service; a RabbitMQ node
## and a PostgreSQL cluster of the run's own, started from the installed binaries and
## restarted during the run; moto in-process): prints one `chaos: ...` line, fails on any
## loss. CHAOS_UPLOADS=40 is the small configuration for CI. See docs/chaos.md.
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -m chaos
