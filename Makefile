# make run    the console on http://127.0.0.1:8000 with no services (SQLite, local-memory cache,
#             Celery tasks inline), after migrating and loading the demo data
# make test   the test suite against real PostgreSQL and Redis (scripts/with-services);
#             extra pytest arguments: make test PYTEST_ARGS='-k introspection -x'
# make lint   ruff check and ruff format --check
# make fuzz   the fuzz tests alone, long: FUZZ_EXAMPLES (default 50) schemathesis cases per API
#             operation and mode, FUZZ_PARSER_EXAMPLES (default 1000) per parser property;
#             `make test` runs them with 3 and 40
# make soak   the soak test alone, long: SOAK_SECONDS (default 300) of steady load on a throwaway
#             stack (tests/faults); `make test` runs it for 20 seconds
# make reliability  the fault tests (tests/faults) with a 120-second soak, their figures rendered
#             into RELIABILITY.md
# make threat-figures  the threat-model suite (tests/threats) alone, its figures written into
#             SECURITY.md
# make bench  the benchmark (bench/): gunicorn, its own PostgreSQL and Redis, load from wrk;
#             writes BENCHMARKS.md and BENCHMARKS.json in under 15 minutes. BENCH_QUICK=1: a few
#             minutes at smaller sizes, written to var/bench-quick/ instead

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Reinstalled only when pyproject.toml changes, so `make test` / `make run` start fast.
STAMP := $(VENV)/.installed

.PHONY: venv run test lint soak reliability fuzz bench threat-figures

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

FUZZ_EXAMPLES ?= 50
FUZZ_PARSER_EXAMPLES ?= 1000

fuzz: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_PARSER_EXAMPLES=$(FUZZ_PARSER_EXAMPLES) \
		scripts/with-services $(PY) -m pytest -p no:cacheprovider tests/fuzz

SOAK_SECONDS ?= 300

soak: venv
	SOAK_SECONDS=$(SOAK_SECONDS) scripts/with-services $(PY) -m pytest -p no:cacheprovider tests/faults/test_soak.py

# The figures go to var/ (not committed); only the rendered RELIABILITY.md is.
reliability: venv
	rm -f var/reliability.json
	RELIABILITY_FIGURES=var/reliability.json SOAK_SECONDS=120 scripts/with-services $(PY) -m pytest -p no:cacheprovider tests/faults
	$(PY) scripts/render-reliability var/reliability.json RELIABILITY.md

# wrk (Debian's package) drives the load; installed here when missing, as .ci/run installs tools.
bench: venv
	command -v wrk >/dev/null || { $$( [ "$$(id -u)" = 0 ] || echo sudo ) sh -c \
		'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk'; }
	$(PY) -m bench $(if $(BENCH_QUICK),--profile quick --out var/bench-quick/BENCHMARKS.md,--profile full)

threat-figures: venv
	scripts/with-services $(PY) scripts/threat-figures SECURITY.md
