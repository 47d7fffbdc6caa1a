# Two entry points (see README): `make quickstart` and `make test`.
# Both create .venv on a fresh clone and install everything they need.
PYTHON ?= python3
VENV ?= .venv
# A GPU user may pick another build, e.g. TORCH_SPEC="torch==2.7.1 torchvision==0.22.1".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: quickstart test lint install dev demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[examples]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

quickstart: $(VENV)/.installed
	$(BIN)/medvl quickstart

# The Gradio demo on 127.0.0.1 (MODEL=DIR for a checkpoint, e.g. the quickstart's GRPO final/).
demo: $(VENV)/.installed-dev
	$(BIN)/medvl demo $(if $(MODEL),--model $(MODEL))

test: $(VENV)/.installed-dev
	$(BIN)/ruff check medvl tests demo bench
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check medvl tests demo bench
	$(BIN)/ruff format --check medvl tests demo bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
