# `make run` and `make test` each set themselves up: venv, Python packages, DSFR assets,
# database schema. Nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app app
PORT ?= 5000
export PORT

.PHONY: setup db run test lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json .dsfr.yml
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

db: setup
	$(FLASK) db upgrade

run: db
	$(FLASK) datapass demo --if-empty
	$(PY) app.py

test: db
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: db
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) node_modules
