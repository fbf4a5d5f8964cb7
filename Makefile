# make demo: set up .venv and run the guided tour on the built-in sample images.
# make test: set up .venv (and, as root, the system tools the tests use) and run every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv sysdeps clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[fuse,dev]'
	touch $(STAMP)

sysdeps:
	@scripts/install-sysdeps

demo: venv
	$(BIN)/imagesim tour

test: venv sysdeps
	$(BIN)/ruff check unionfs imagesim tests benchmarks
	$(BIN)/python -m pytest -n 2 --timeout=600 --durations=20 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check unionfs imagesim tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
