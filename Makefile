# otaguard: every target sets up its own virtualenv, so a fresh clone needs nothing else.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean system-deps postgres

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# System packages the tests need (real parts, not mocks): SoftHSM2 for PKCS#11, OpenSSL,
# nginx (an untrusted mirror serving an audit log export).
system-deps:
	@command -v softhsm2-util >/dev/null && command -v openssl >/dev/null || { \
	  echo "installing softhsm2 and openssl (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 openssl >/dev/null; }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "installing nginx (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }

# The server's tests run on PostgreSQL too (127.0.0.1:5432, trust auth): start it if it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done; }

test: venv system-deps postgres lint
	$(BIN)/python -m pytest -n 2 tests

lint: venv
	$(BIN)/ruff check $(wildcard src tests bench scripts)
	$(BIN)/ruff format --check $(wildcard src tests bench scripts)
	$(BIN)/mypy

# Byte-compile first: an installed otaguard has .pyc files (pip compiles at install), and
# imgtool's do; without this, PYTHONDONTWRITEBYTECODE=1 would charge us a compile per run.
bench: venv system-deps postgres bench-deps
	$(BIN)/python -m compileall -q src >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py

# The server bench's load generator: Debian's wrk (bench/README.md).
.PHONY: bench-deps
bench-deps:
	@command -v wrk >/dev/null || { \
	  echo "installing wrk (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache demo-out

# tuf-conformance suite against `otaguard tuf-client`. The suite is never part of
# this repository: check it out beside the project (../tuf-conformance) or point
# CONFORMANCE_DIR at a checkout. Needs the `faketime` program (Debian: faketime).
CONFORMANCE_DIR ?= $(abspath ../tuf-conformance)

.PHONY: conformance
conformance: venv
	@if [ ! -d "$(CONFORMANCE_DIR)/tuf_conformance" ]; then \
	  echo "tuf-conformance not found at $(CONFORMANCE_DIR)."; \
	  echo "get it: git clone https://github.com/theupdateframework/tuf-conformance $(CONFORMANCE_DIR)"; \
	  echo "then: apt-get install faketime; make conformance [CONFORMANCE_DIR=...]"; \
	  exit 1; \
	fi
	@command -v faketime >/dev/null || { echo "conformance needs faketime (apt-get install faketime)"; exit 1; }
	test -x $(CONFORMANCE_DIR)/env/bin/pytest || { \
	  python3 -m venv $(CONFORMANCE_DIR)/env && \
	  $(CONFORMANCE_DIR)/env/bin/python -m pip install -q -e $(CONFORMANCE_DIR); }
	cd $(CONFORMANCE_DIR) && ./env/bin/pytest -q tuf_conformance -p no:cacheprovider \
	  --entrypoint "$(CURDIR)/$(BIN)/otaguard tuf-client"
