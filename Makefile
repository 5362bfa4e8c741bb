# Everything a fresh machine with Python 3.10-3.13 and make needs.
#   make test       - lint, type checks, packaging, then the whole suite on Airflow 3.3 and again on
#                     Airflow 2.11, then the compatibility run on Airflow 3.0, 3.1 and 3.2
#                     (installs Debian's chromium, redis-server and postgresql packages when it can)
#   make test-unit  - the fast tests only (tests/unit: no Airflow process, under a minute)
#   make demo   - run the example pipeline against the embedded Agora simulator
#   make screenshots - refresh docs/connection-form.png from the browser test (test runs leave it alone)
PYTHON ?= python3
AIRFLOW_3 ?= 3.3.2
AIRFLOW_2 ?= 2.11.2
VENV ?= .venv
VENV_AIRFLOW_2 ?= .venv-airflow2
BIN := $(VENV)/bin

.PHONY: test test-unit lint typecheck package pytest pytest-airflow2 browser redis-server postgresql demo screenshots clean

# The storage stack (the Amazon provider's s3fs reader, moto) pinned to a set known to install together:
# unpinned, pip backtracks for a long time between aiobotocore, botocore and s3fs.
STORAGE_PINS := "apache-airflow-providers-amazon==9.39.0" "s3fs==2026.9.0" "aiobotocore==3.10.0" \
	"boto3==1.43.117" "botocore==1.43.117" "s3transfer==0.19.3" "moto==5.2.6"

# Airflow 2.11 with today's dependencies: cryptography 51 (2026-12-02) breaks its Fernet (get_fernet sets
# an attribute on MultiFernet, now a Rust object), so no connection can be read; 50.0.2 is the last good one.
AIRFLOW_2_PINS := "cryptography<51"

# One virtual environment per Airflow line; the stamp names the version it holds.
$(VENV)/.installed-$(AIRFLOW_3): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_3)" -e ".[test]" $(STORAGE_PINS)
	rm -f $(VENV)/.installed-*
	touch $@

$(VENV_AIRFLOW_2)/.installed-$(AIRFLOW_2): pyproject.toml
	$(PYTHON) -m venv $(VENV_AIRFLOW_2)
	$(VENV_AIRFLOW_2)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_AIRFLOW_2)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_2)" -e ".[test]" $(STORAGE_PINS) \
		$(AIRFLOW_2_PINS)
	rm -f $(VENV_AIRFLOW_2)/.installed-*
	touch $@

lint: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/mypy

# The wheel and sdist as users get them: metadata valid, LICENSE inside.
package: $(VENV)/.installed-$(AIRFLOW_3)
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(BIN)/python -m zipfile -l dist/*.whl | grep 'dist-info/licenses/LICENSE' > /dev/null

# Debian's Chromium and the playwright package for the connection-form test (skipped without them).
browser: $(VENV)/.installed-$(AIRFLOW_3)
	sh scripts/install-browser.sh $(VENV)

# The fast tests wait on loopback servers, not on the CPU: four workers on two cores.
# pytest's temporary folders go to build/pytest (git-ignored, emptied by each run), not /tmp.
PYTEST_TMP = $(shell mkdir -p build/pytest && echo $(CURDIR)/build/pytest)
UNIT = -m pytest -q -p no:cacheprovider --basetemp=$(PYTEST_TMP)/unit -n 4 tests/unit
INTEGRATION = -m pytest -q -p no:cacheprovider --basetemp=$(PYTEST_TMP)/integration tests/integration

test-unit: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/python $(UNIT)

# Debian's redis-server for the shared-budget tests (skipped without it); the tests start their own.
redis-server:
	sh scripts/install-redis.sh

# Debian's postgresql for the tests that run several Airflow processes on one metadata database
# (skipped without it); the tests start their own server in a temporary directory on a free port.
postgresql:
	sh scripts/install-postgresql.sh

pytest: $(VENV)/.installed-$(AIRFLOW_3) browser redis-server postgresql
	$(BIN)/python $(UNIT)
	$(BIN)/python $(INTEGRATION)

pytest-airflow2: $(VENV_AIRFLOW_2)/.installed-$(AIRFLOW_2) redis-server postgresql
	$(VENV_AIRFLOW_2)/bin/python $(UNIT)
	$(VENV_AIRFLOW_2)/bin/python $(INTEGRATION)

test: lint typecheck package pytest pytest-airflow2 compat

demo: $(VENV)/.installed-$(AIRFLOW_3)
	$(BIN)/python scripts/demo.py

# The test run saves its picture of the connection form in build/screenshots/ (git-ignored), so that
# it leaves the tree as it found it; this refreshes the committed copy the README shows.
SCREENSHOT := build/screenshots/connection-form.png
screenshots: $(VENV)/.installed-$(AIRFLOW_3) browser
	rm -f $(SCREENSHOT)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_connection_ui.py -k browser
	test -f $(SCREENSHOT) || { echo "no $(SCREENSHOT): the browser test skipped (see its reason above)"; exit 1; }
	cp $(SCREENSHOT) docs/connection-form.png

clean:
	rm -rf $(VENV) $(VENV_AIRFLOW_2) .airflow .pytest_cache .mypy_cache .ruff_cache demo-output build

# -- Compatibility run: the provider on the latest patch release of every other Airflow 3 line ------
# `make compat` (part of `make test`) checks registration, the connection form as the API server
# serves it, and the example pipeline (poke and deferrable) on each line: compat/check_compat.py.
# Each line gets its own virtual environment with the provider installed editable, no extras.
# Airflow's constraint files cannot be fetched here, and plain pip pulls dependencies released after
# the Airflow release that break Airflow itself (3.0.6: fastapi >= 0.117, PyJWT >= 2.11; 3.2.2:
# fastapi >= 0.137, svcs 26), so uv resolves every line as of the day after its release
# (--exclude-newer, midnight UTC), from a uv of its own in .venv-tools.
UV_VERSION ?= 0.13.9
UV_VENV ?= .venv-tools
UV := $(UV_VENV)/bin/uv
COMPAT_LINES := 3.0 3.1 3.2
COMPAT_AIRFLOW_3.0 := 3.0.6
COMPAT_DATE_3.0 := 2025-08-30
# Airflow 3.0's API server shows a provider's connection form only when wtforms is importable.
COMPAT_EXTRA_3.0 := wtforms
COMPAT_AIRFLOW_3.1 := 3.1.8
COMPAT_DATE_3.1 := 2026-03-12
COMPAT_AIRFLOW_3.2 := 3.2.2
COMPAT_DATE_3.2 := 2026-05-30
# Python versions a line's Airflow does not install on (3.0.6: requires-python !=3.13): skipped there.
COMPAT_NOT_ON_3.0 := 3.13
COMPAT_PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
COMPAT_PYTEST := -m pytest -v -p no:cacheprovider -W ignore::pytest.PytestConfigWarning compat/check_compat.py

.PHONY: compat $(addprefix compat-,$(COMPAT_LINES)) clean-compat

$(UV_VENV)/.installed-uv-$(UV_VERSION):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	rm -f $(UV_VENV)/.installed-uv-*
	touch $@

# compat-<line>: (re)build .venv-compat-<line> when the pins or pyproject.toml change, then check it.
define COMPAT_LINE
.venv-compat-$(1)/.installed-$(COMPAT_AIRFLOW_$(1))-$(COMPAT_DATE_$(1)): pyproject.toml | $(UV_VENV)/.installed-uv-$(UV_VERSION)
	rm -rf .venv-compat-$(1)
	$(PYTHON) -m venv --without-pip .venv-compat-$(1)
	$(UV) pip install --quiet --python .venv-compat-$(1)/bin/python --exclude-newer $(COMPAT_DATE_$(1))T00:00:00Z \
		"apache-airflow==$(COMPAT_AIRFLOW_$(1))" $(COMPAT_EXTRA_$(1)) pytest -e .
	touch $$@

ifeq ($(filter $(COMPAT_PYTHON_VERSION),$(COMPAT_NOT_ON_$(1))),)
compat-$(1): .venv-compat-$(1)/.installed-$(COMPAT_AIRFLOW_$(1))-$(COMPAT_DATE_$(1))
	.venv-compat-$(1)/bin/python $(COMPAT_PYTEST)
else
compat-$(1):
	@echo "compat-$(1): skipped, Airflow $(COMPAT_AIRFLOW_$(1)) does not install on Python $(COMPAT_PYTHON_VERSION)"
endif
endef
$(foreach line,$(COMPAT_LINES),$(eval $(call COMPAT_LINE,$(line))))

compat: $(addprefix compat-,$(COMPAT_LINES))

clean-compat:
	rm -rf $(UV_VENV) $(addprefix .venv-compat-,$(COMPAT_LINES))
