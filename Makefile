# meetnet: the two commands are `make up` and `make test`; both set the machine up first.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin

.PHONY: setup up test lint unit clean

setup:            ## install/configure everything needed (idempotent; seconds when done)
	@bash scripts/setup.sh

up: setup         ## run the whole platform with simulated sensors; Ctrl-C stops it
	@$(BIN)/meetnet up

test: setup lint  ## every test, on the real services
	@$(BIN)/pytest $(PYTEST_ARGS)

lint:
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

unit: setup       ## only the fast tests of pure code
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf .meetnet .pytest_cache .mypy_cache .ruff_cache .hypothesis
