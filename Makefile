# `make demo` and `make test` are the two commands a user needs; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# The whole path on real bundled photos and the real offline teacher; each step says what it does.
demo: $(STAMP)
	@echo "== 1/1 demo data: real photos from scikit-image/scikit-learn -> $(DEMO_DIR)/images"
	HF_HUB_OFFLINE=1 $(VENV)/bin/distill demo-data $(DEMO_DIR)/images

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy teacher_store api

clean:
	rm -rf $(VENV) $(DEMO_DIR)
