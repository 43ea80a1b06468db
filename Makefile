# kuberunner developer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup tools system-deps test unit lint fmt crd demo images

setup: $(VENV)/.installed

# The project (editable) and, from devtools/, the dev tools that add `kuberunner dev`.
$(VENV)/.installed: pyproject.toml devtools/pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[operator,dev]' -e ./devtools
	touch $@

# Control-plane, real-node (kubelet, kube-proxy, containerd, CNI plugins, CoreDNS, pause), kwok,
# helm and kubeconform binaries, built from Go modules and cached
# under ~/.cache/kuberunner/bin (rebuilt only when missing or broken).
tools:
	bash hack/build-tools.sh

# Debian packages the tests use (podman/buildah for images, prometheus, wrk).
system-deps:
	bash hack/install-system-deps.sh

test: setup tools system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Pure tests: they need only the virtual environment (no cluster, helm, promtool or podman).
unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# The tests' shared helpers, type-checked like the product (test modules themselves are not);
# tests/reliability/conftest.py in a run of its own, as mypy cannot hold two `conftest` modules.
TEST_HELPERS := tests/conftest.py tests/k8s_helpers.py tests/podman_helpers.py \
	tests/integration/test_operator_support.py tests/operator_support.py tests/prometheus_helpers.py \
	tests/reliability/runner_support.py
TEST_MYPYPATH := tests:tests/integration:tests/reliability

lint: setup tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict runner_image/kuberunner operator/kuberunner_operator devtools/kuberunner_dev
	MYPYPATH=$(TEST_MYPYPATH) $(BIN)/mypy --strict bench $(TEST_HELPERS)
	MYPYPATH=$(TEST_MYPYPATH) $(BIN)/mypy --strict tests/reliability/conftest.py
	bash hack/render-manifests.sh --check

# Everything derived from the pydantic models: the CRD, its field reference, and the chart's copy
# of the CRD plus the plain install manifest. The tests fail when any of them is stale.
crd: setup tools
	$(BIN)/kuberunner manifest crd -o crds/runnerservices.kuberunner.io.yaml
	$(BIN)/kuberunner manifest crd-docs -o docs/crd-reference.md
	bash hack/render-manifests.sh

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: setup tools system-deps
	$(BIN)/kuberunner dev demo

# localhost/kuberunner-runner:dev and localhost/kuberunner-operator:dev, built with podman on a
# debootstrap base (no registry needed); see hack/build-images.sh.
images:
	bash hack/build-images.sh
