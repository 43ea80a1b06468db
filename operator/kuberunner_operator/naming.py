"""Names and labels of the objects the operator creates.

Every child name is a DNS-1035 label (the strictest rule among Deployment, Service, HPA and
PDB names, which all share one name per runner). Runner names may hold `_` and `.` and
RunnerService names may be long DNS subdomains, so names are sanitised; to keep `tok_a` and
`tok-a` (or service `a` + runner `b-c` and service `a-b` + runner `c`) apart, every runner
object name ends in a hash of the exact (service, runner) pair.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
HASH_LENGTH = 8
PORT = 3000
PORT_NAME = "http"
API_SERVER_COMPONENT = "api-server"
RUNNER_COMPONENT = "runner"
API_SERVER_STATUS_NAME = "api-server"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_SERVICE = "kuberunner.io/service"
LABEL_RUNNER = "kuberunner.io/runner"
APP_NAME = "kuberunner"
MANAGER = "kuberunner"
# What the operator's informers select: every child and pod it made carries it.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def short_hash(*parts: str) -> str:
    """A stable 8-hex digest of the parts (NUL-joined so ("a", "bc") != ("ab", "c"))."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_LENGTH]


def _sanitise(text: str) -> str:
    """Lowercase, map every character outside [a-z0-9-] to '-', squeeze and trim dashes."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", out).strip("-")


def _with_suffix(base: str, suffix: str) -> str:
    """`base-suffix`, cutting `base` so the whole fits in 63 and starts with a letter."""
    base = _sanitise(base)
    if not base or not base[0].isalpha():
        base = f"k{base}" if base else "k"
    room = MAX_NAME - len(suffix) - 1
    base = base[:room].rstrip("-")
    return f"{base}-{suffix}"


def runner_object_name(service: str, runner: str) -> str:
    """Name of a runner's Deployment, Service, HPA and PDB, e.g. `demo-tok-a-1f2e3d4c`."""
    return _with_suffix(f"{service}-{runner}", short_hash(service, "runner", runner))


def api_server_object_name(service: str) -> str:
    """Name of the API server's Deployment, Service and HPA: `<service>-api` when that is a
    valid label; otherwise sanitised and hashed. Runner names end in 8 hex digits and `api`
    is not hex, so the two never collide."""
    plain = f"{service}-api"
    if _DNS_LABEL.match(plain) and len(plain) <= MAX_NAME:
        return plain
    return _with_suffix(f"{service}-api", short_hash(service, API_SERVER_COMPONENT))


def service_url(object_name: str, namespace: str) -> str:
    return f"http://{object_name}.{namespace}.svc:{PORT}"


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a valid value that still identifies it."""
    if len(text) <= MAX_NAME and _LABEL_VALUE.match(text):
        return text
    digest = short_hash(text)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: MAX_NAME - HASH_LENGTH - 1]
    base = base.strip("-_.")
    return f"{base}-{digest}" if base else digest


def selector_labels(service: str, component: str, runner: str | None) -> dict[str, str]:
    """Labels a Deployment selects its pods by (immutable once created)."""
    labels = {
        LABEL_SERVICE: label_value(service),
        LABEL_COMPONENT: component,
    }
    if runner is not None:
        labels[LABEL_RUNNER] = label_value(runner)
    return labels


def common_labels(service: str, component: str, runner: str | None) -> dict[str, str]:
    """The full label set of docs/contracts.md, on every child and pod."""
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(service),
        LABEL_MANAGED_BY: MANAGER,
    }
    labels.update(selector_labels(service, component, runner))
    return dict(sorted(labels.items()))
