# stellarpop: install into .venv from the pinned lock (no resolving), run the demo, run the tests.
# The first Python 3.10 that runs (a pyenv shim may exist without its version being active).
PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
            $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9

.PHONY: install demo test test-slow test-all lint clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "stellarpop needs Python 3.10 (e.g. pyenv install 3.10)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: requirements.lock setup.py $(BIN)/python
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The main job on bundled data: the whole pipeline on 600 simulated spectra, the shipped
# model's predictions for the real SDSS spectra that ship inside ppxf, and the demo run's
# report (runs/demo/report/index.html).
demo: install
	$(BIN)/stellarpop run-pipeline --config pipeline/demo.yaml
	$(BIN)/stellarpop predict bundled --output runs/demo/predictions.csv
	$(BIN)/stellarpop report runs/demo --output runs/demo/report

# The README's test command: every test but the slow tier (multi-process Beam runs, registry
# downloads, whole-pipeline runs killed and resumed). CI runs both tiers (.ci/run).
test: install
	$(BIN)/python -m pytest -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -m slow

test-all: install
	$(BIN)/python -m pytest

# The linter and formatter (ruff.toml): what CI checks before anything runs.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
