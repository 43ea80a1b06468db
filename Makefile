# kuberunner developer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup tools system-deps test unit lint fmt crd demo clean-cluster

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[operator,dev]'
	touch $@

# Control-plane, kwok, helm and kubeconform binaries, built from Go modules and cached
# under ~/.cache/kuberunner/bin (rebuilt only when missing or broken).
tools:
	bash hack/build-tools.sh

# Debian packages the tests use (podman/buildah for images, prometheus, wrk).
system-deps:
	bash hack/install-system-deps.sh

test: setup tools system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict runner_image/kuberunner operator/kuberunner_operator

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: setup tools
	$(BIN)/kuberunner dev demo
