# Sandbox Control Plane: `make run` starts the embedded default, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

# mysqlclient is only needed (and only compiled) when DATABASE_URL points at MariaDB/MySQL.
ifneq ($(filter mysql://% mariadb://%,$(DATABASE_URL)),)
DB_EXTRA := ,mariadb
endif

SYSTEM_PACKAGES := make python3-venv bubblewrap libseccomp2 util-linux e2fsprogs nodejs pkg-config gcc python3-dev default-libmysqlclient-dev chromium

.PHONY: run install install-dev test lint format system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run$(DB_EXTRA): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[runtime$(DB_EXTRA)]"
	touch $@

$(VENV)/.installed-dev$(DB_EXTRA): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev$(DB_EXTRA)]"
	touch $@

install: $(VENV)/.installed-run$(DB_EXTRA)
install-dev: $(VENV)/.installed-dev$(DB_EXTRA)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py bootstrap_local
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(PY) manage.py makemigrations --check --dry-run

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

system-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
