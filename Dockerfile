# kuberunner images. Two final targets share one Python base:
#   runner    `kuberunner runner serve MODULE:CLASS ...`  (the library, the server, numpy)
#   operator  `kuberunner operator run ...`               (the library plus kopf and the k8s client)
#
#   podman build --target runner   -t kuberunner-runner .
#   podman build --target operator -t kuberunner-operator .
#
# BASE must provide python3 (3.11+) with the venv module. The default is the public slim image;
# CI builds on a debootstrapped Debian image instead (hack/build-images.sh, no registry needed).
ARG BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# Build stages: nothing from here reaches a final image except the virtual environment.
FROM ${BASE} AS python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore

# The project wheel. The build backend is installed first (cached), so a change to the sources
# only reruns the cheap pure-Python wheel build.
FROM python AS wheel
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install "hatchling>=1.25"
COPY pyproject.toml README.md /src/
COPY runner_image /src/runner_image
COPY operator /src/operator
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

# Requirement lists per target, read from pyproject.toml alone, so that the dependency layers
# below stay cached while only the sources change.
FROM python AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c 'import tomllib; \
p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
x = p["optional-dependencies"]; \
[open(f"/src/requirements-{t}.txt", "w").write("\n".join(p["dependencies"] + x[e]) + "\n") \
 for t, e in (("runner", "numpy"), ("operator", "operator"))]'

# The iris example's model (kuberunner.examples.iris): trained here with scikit-learn, which
# ships the data set; only the JSON weights reach the runner image, which serves them with the
# standard library. Pinned, so that every build serves the same weights.
FROM python AS iris-model
RUN python3 -m venv /opt/train \
 && /opt/train/bin/pip install "scikit-learn==1.9.1"
COPY runner_image/kuberunner/examples/train_iris.py /src/train_iris.py
RUN /opt/train/bin/python /src/train_iris.py /model/iris.json

# Two layers per target, so that a change to the sources replaces only a small one:
#   /opt/venv        the dependencies (rebuilt only when pyproject.toml's dependencies change);
#                    pip and setuptools are removed, so the final images carry no installer;
#   /opt/kuberunner  the project itself (lib/ on sys.path through a .pth file, bin/kuberunner).
FROM python AS runner-deps
COPY --from=requirements /src/requirements-runner.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement /tmp/requirements.txt \
 && /opt/venv/bin/python -c "import site; \
open(site.getsitepackages()[0] + '/kuberunner.pth', 'w').write('/opt/kuberunner/lib\n')"

FROM runner-deps AS runner-venv
RUN /opt/venv/bin/pip uninstall --yes pip setuptools

# The runner image has no operator dependencies, so it does not ship the operator package either
# (the CLI then simply lists no operator commands).
FROM runner-deps AS runner-app
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/pip install --no-deps --target /opt/kuberunner/lib /wheels/*.whl \
 && mv /opt/kuberunner/lib/bin /opt/kuberunner/bin \
 && rm -rf /opt/kuberunner/lib/kuberunner_operator \
 && /opt/venv/bin/pip check \
 && /opt/kuberunner/bin/kuberunner runner serve --help >/dev/null

FROM python AS operator-deps
COPY --from=requirements /src/requirements-operator.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement /tmp/requirements.txt \
 && /opt/venv/bin/python -c "import site; \
open(site.getsitepackages()[0] + '/kuberunner.pth', 'w').write('/opt/kuberunner/lib\n')"

FROM operator-deps AS operator-venv
RUN /opt/venv/bin/pip uninstall --yes pip setuptools

FROM operator-deps AS operator-app
COPY --from=wheel /wheels /wheels
RUN /opt/venv/bin/pip install --no-deps --target /opt/kuberunner/lib /wheels/*.whl \
 && mv /opt/kuberunner/lib/bin /opt/kuberunner/bin \
 && /opt/venv/bin/pip check \
 && /opt/kuberunner/bin/kuberunner operator run --help >/dev/null

# ---------------------------------------------------------------------------------------------
# Common runtime settings: non-root numeric user, read-only root filesystem friendly (only
# /tmp is written; Kubernetes mounts an emptyDir there), no bytecode writes at run time.
FROM ${BASE} AS runtime
ARG VERSION=0.0.0
ARG SOURCE=https://github.com/kuberunner/kuberunner
# A passwd entry for uid 65532 so that tools asking "who am I" get an answer; home is /tmp.
RUN echo 'kuberunner:x:65532:65532:kuberunner:/tmp:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'kuberunner:x:65532:' >>/etc/group \
 && mkdir -p /app
ENV PATH=/opt/kuberunner/bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# User code (runnables) goes here in derived images: `COPY model.py /app/`.
WORKDIR /app
USER 65532:65532
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kuberunner"

FROM runtime AS operator
COPY --from=operator-venv /opt/venv /opt/venv
COPY --from=operator-app /opt/kuberunner /opt/kuberunner
LABEL org.opencontainers.image.title="kuberunner-operator" \
      org.opencontainers.image.description="kuberunner operator: reconciles RunnerService resources"
ENTRYPOINT ["kuberunner", "operator", "run"]

# Last, so that a plain `podman build .` gives the runner image.
FROM runtime AS runner
COPY --from=runner-venv /opt/venv /opt/venv
COPY --from=runner-app /opt/kuberunner /opt/kuberunner
COPY --from=iris-model /model/iris.json /opt/kuberunner/models/iris.json
LABEL org.opencontainers.image.title="kuberunner-runner" \
      org.opencontainers.image.description="kuberunner runner server: serves one runner's methods over HTTP"
EXPOSE 3000
ENTRYPOINT ["kuberunner", "runner", "serve"]
