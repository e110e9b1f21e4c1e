# Two set-up commands on a fresh machine: `make train` (the main job) and `make test`.
# Both create the virtual environment .venv and install the package into it on first use.
PYTHON ?= python3
VENV ?= .venv
# A torchvision root with MNIST; when a shared data folder sits beside the checkout it is used,
# otherwise pyro-vae downloads MNIST to ~/.cache/pyro-vae/data.
DATA_DIR ?= $(firstword $(wildcard ../shared/data))
TRAIN_ARGS ?= --config configs/mnist-reference.toml --out runs/mnist-mlp

.PHONY: train test test-fast lint format clean
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[test,dev]'
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/pyro-vae train $(TRAIN_ARGS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --overwrite
	$(VENV)/bin/pyro-vae elbo --checkpoint runs/mnist-mlp/ckpt.pt

# The whole suite, after the linter and the formatter's check (what CI runs).
test: lint
	$(VENV)/bin/python -m pytest -q

# The inner loop: the tests not marked slow (no training runs over the data, no subprocess jobs).
test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs *.egg-info
