# Every target creates .venv and installs the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make pytest`; each test file runs whole on one worker.
PYTEST_WORKERS ?= 2

.PHONY: test demo lint typecheck pytest bench interop-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

tests/interop/node_modules/.package-lock.json: tests/interop/package.json tests/interop/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/interop && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: interop tests will skip (install Node.js 20 and npm)"; fi

interop-deps: tests/interop/node_modules/.package-lock.json

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP) interop-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/opapprove demo

bench: $(STAMP) interop-deps
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tests/interop/node_modules
