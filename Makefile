# Two commands for a fresh machine: `make run` and `make test` (see README.md).
BOOTSTRAP_PYTHON ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format install

install: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(INSTALLED)
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py seed_demo
	@echo "Caloria admin: http://127.0.0.1:8000/admin/"
	$(PYTHON) manage.py runserver 127.0.0.1:8000

test: $(INSTALLED) lint
	scripts/test.sh

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
