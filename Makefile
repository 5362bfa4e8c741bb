# Everything a fresh machine with Python 3.10-3.13 and make needs.
#   make test   - lint, type checks, then the whole suite on Airflow 3.3 and again on Airflow 2.11
#   make demo   - run the example pipeline against the embedded Agora simulator
PYTHON ?= python3
AIRFLOW_3 ?= 3.3.2
AIRFLOW_2 ?= 2.11.2
VENV ?= .venv
VENV_AIRFLOW_2 ?= .venv-airflow2
BIN := $(VENV)/bin

.PHONY: test lint typecheck pytest pytest-airflow2 browser demo clean

# One virtual environment per Airflow line; the stamp names the version it holds.
$(VENV)/.installed-$(AIRFLOW_3): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_3)" -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

$(VENV_AIRFLOW_2)/.installed-$(AIRFLOW_2): pyproject.toml
	$(PYTHON) -m venv $(VENV_AIRFLOW_2)
	$(VENV_AIRFLOW_2)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_AIRFLOW_2)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_2)" -e ".[test]"
	rm -f $(VENV_AIRFLOW_2)/.installed-*
	touch $@

lint: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/mypy

# Debian's Chromium and the playwright package for the connection-form test (skipped without them).
browser: $(VENV)/.installed-$(AIRFLOW_3)
	sh scripts/install-browser.sh $(VENV)

pytest: $(VENV)/.installed-$(AIRFLOW_3) browser
	$(BIN)/python -m pytest -q

pytest-airflow2: $(VENV_AIRFLOW_2)/.installed-$(AIRFLOW_2)
	$(VENV_AIRFLOW_2)/bin/python -m pytest -q

test: lint typecheck pytest pytest-airflow2

demo: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) $(VENV_AIRFLOW_2) .airflow .pytest_cache .mypy_cache .ruff_cache demo-output
