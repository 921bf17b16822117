# make run    the console on http://127.0.0.1:8000 with no services (SQLite, local-memory cache,
#             Celery tasks inline), after migrating and loading the demo data
# make test   the test suite against real PostgreSQL and Redis (scripts/with-services);
#             extra pytest arguments: make test PYTEST_ARGS='-k introspection -x'
# make lint   ruff check and ruff format --check

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Reinstalled only when pyproject.toml changes, so `make test` / `make run` start fast.
STAMP := $(VENV)/.installed

.PHONY: venv run test lint

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# `make run` must not pick up services meant for something else: without DATABASE_URL and
# REDIS_URL the settings fall back to var/console.sqlite3, a local-memory cache and eager Celery.
RUN_ENV := env -u DATABASE_URL -u REDIS_URL DJANGO_DEBUG=1

run: venv
	$(RUN_ENV) $(PY) manage.py migrate --noinput
	$(RUN_ENV) $(PY) manage.py load_demo
	$(RUN_ENV) $(PY) manage.py runserver 127.0.0.1:8000

# The MCP conformance suite needs npm; without it tests/test_conformance.py skips and says so.
test: venv
	scripts/install-conformance || echo "make test: conformance suite not installed" >&2
	scripts/with-services $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
