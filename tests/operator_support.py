"""Cluster-side helpers of the reliability suite (no tests here): bulk reads of RunnerServices
and their children, and the checks "all converged" and "no duplicate, no orphan"."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from k8s_helpers import kubectl_json
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.cluster import api_client

RSVC_PATH = "/apis/kuberunner.io/v1alpha1/namespaces/{ns}/runnerservices"


def services(cluster: ClusterInfo, ns: str) -> list[dict[str, Any]]:
    """RunnerServices of `ns` (through the API as JSON: names may hold any unicode)."""
    with api_client(cluster, timeout=30) as api:
        r = api.get(RSVC_PATH.format(ns=ns))
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
    return items


def ready_condition(body: dict[str, Any]) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def converged(body: dict[str, Any]) -> bool:
    """Status is about the current generation and says Ready."""
    status = body.get("status") or {}
    current = status.get("observedGeneration") == body["metadata"]["generation"]
    return current and ready_condition(body).get("status") == "True"


def not_converged(cluster: ClusterInfo, ns: str) -> list[str]:
    return [b["metadata"]["name"] for b in services(cluster, ns) if not converged(b)]


def wait_all_converged(cluster: ClusterInfo, ns: str, expected: int, timeout: float) -> float:
    """Seconds until `expected` services of `ns` are all converged (TimeoutError otherwise)."""
    started = time.monotonic()
    deadline = started + timeout
    left: list[dict[str, Any]] = []
    count = 0
    while time.monotonic() < deadline:
        items = services(cluster, ns)
        count = len(items)
        left = [b for b in items if not converged(b)]
        if count == expected and not left:
            return time.monotonic() - started
        time.sleep(1.0)
    # Say why: the status each one shows (or none) is the first clue.
    why = [
        f"{b['metadata']['name']} (generation {b['metadata']['generation']}, observed "
        f"{(b.get('status') or {}).get('observedGeneration')}): "
        f"{ready_condition(b).get('reason')}: {str(ready_condition(b).get('message'))[:200]}"
        for b in left[:5]
    ]
    raise TimeoutError(
        f"{len(left)} of {count} services not converged after {timeout}s: " + "; ".join(why)
    )


def child_census(cluster: ClusterInfo, ns: str) -> dict[str, Any]:
    """Deployments and Services managed by kuberunner in `ns`, checked against the services:
    duplicates (more than one child of a kind per (service, runner)), orphans (a child whose
    owner is not a live RunnerService uid), and missing children."""
    owners = {b["metadata"]["uid"]: b["metadata"]["name"] for b in services(cluster, ns)}
    expected = {
        (b["metadata"]["name"], r["name"])
        for b in services(cluster, ns)
        for r in b["spec"]["runners"]
    }
    kids = kubectl_json(
        cluster, "get", "deployments,services", "-n", ns, "-l",
        "app.kubernetes.io/managed-by=kuberunner",
    )["items"]  # fmt: skip
    per_key: Counter[tuple[str, str, str]] = Counter()
    orphans = []
    for kid in kids:
        labels = kid["metadata"].get("labels") or {}
        key = (kid["kind"], labels.get("kuberunner.io/service", ""),
               labels.get("kuberunner.io/runner", ""))  # fmt: skip
        per_key[key] += 1
        refs = [o["uid"] for o in kid["metadata"].get("ownerReferences") or []]
        if not any(uid in owners for uid in refs):
            orphans.append(f"{kid['kind']}/{kid['metadata']['name']}")
    duplicates = {f"{k[0]}/{k[1]}/{k[2]}": n for k, n in per_key.items() if n > 1}
    missing = [
        f"{kind}/{svc}/{run}"
        for svc, run in expected
        for kind in ("Deployment", "Service")
        if per_key[(kind, svc, run)] == 0
    ]
    return {"children": len(kids), "duplicates": duplicates, "orphans": orphans,
            "missing": missing}  # fmt: skip
