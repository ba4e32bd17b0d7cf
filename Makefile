# Two commands for a fresh machine: `make run` and `make test` (see README.md).
BOOTSTRAP_PYTHON ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# dbops' tests run a second time under psycopg 3, in a virtualenv that has no psycopg2 at all.
PSYCOPG3_VENV := .venv-psycopg3
PSYCOPG3_INSTALLED := $(PSYCOPG3_VENV)/.installed

.PHONY: run test lint format install

install: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(PSYCOPG3_INSTALLED): requirements.txt requirements-dev.txt requirements-psycopg3.txt
	test -x $(PSYCOPG3_VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(PSYCOPG3_VENV)
	$(PSYCOPG3_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PSYCOPG3_VENV)/bin/python -m pip uninstall --quiet --yes psycopg2-binary
	$(PSYCOPG3_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-psycopg3.txt
	touch $@

run: $(INSTALLED)
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py seed_demo
	@echo "Caloria admin: http://127.0.0.1:8000/admin/"
	$(PYTHON) manage.py runserver 127.0.0.1:8000

test: $(INSTALLED) $(PSYCOPG3_INSTALLED) lint
	scripts/test.sh

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
