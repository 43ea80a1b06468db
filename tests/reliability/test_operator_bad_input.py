"""Fuzzed RunnerService manifests (hypothesis) against the real API server and operator: wrong
types, missing fields, huge numbers, unicode and long names, colliding names, impossible
resources. Each manifest is either rejected by the API server naming the field, or accepted and
then reported by the operator (Ready with its children, or not Ready with a reason). The
operator never crashes, logs no traceback, and does not hot-loop afterwards."""

from __future__ import annotations

import copy
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from test_operator_support import OperatorProcess, install_crd, new_namespace, rsvc, runner

from k8s_helpers import kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.cluster import api_client
from kuberunner_operator.naming import LABEL_SERVICE, label_value
from operator_support import RSVC_PATH, ready_condition, services

Figures = Callable[[str, object], None]

WRONG = [None, 0, -1, 1.5, "x", "", [], {}, True, [1, "a"], {"a": [1]}, 10**30, "9" * 300]
HUGE = [2**31, 2**63, 10**20, 1e308, -(2**63), "1e300", "999Ei", "100000000", 9, 64, 1000]
# Where values go: spec paths (ints index lists).
PATHS: list[tuple[Any, ...]] = [
    ("image",), ("runners",), ("imagePullPolicy",), ("env",), ("env", 0, "name"),
    ("env", 0, "valueFrom"), ("podTemplate",), ("podTemplate", "nodeSelector"),
    ("runners", 0), ("runners", 0, "name"), ("runners", 0, "runnable"),
    ("runners", 0, "supportedResources"), ("runners", 0, "supportsCpuMultiThreading"),
    ("runners", 0, "resources"), ("runners", 0, "resources", "cpu"),
    ("runners", 0, "resources", "memory"), ("runners", 0, "resources", "nvidia.com/gpu"),
    ("runners", 0, "workersPerResource"), ("runners", 0, "replicas"),
    ("runners", 0, "batching"), ("runners", 0, "batching", "maxBatchSize"),
    ("runners", 0, "batching", "maxLatencyMs"), ("runners", 0, "autoscaling"),
    ("runners", 0, "autoscaling", "minReplicas"), ("runners", 0, "autoscaling", "maxReplicas"),
    ("runners", 0, "disruptionBudget", "minAvailable"), ("runners", 0, "rollout", "maxSurge"),
    ("runners", 0, "env", 0, "name"), ("runners", 0, "podTemplate", "tolerations"),
    ("apiServer",), ("apiServer", "service"), ("apiServer", "replicas"),
]  # fmt: skip
NAMES = st.one_of(
    st.from_regex(r"fz-[a-z0-9]{1,8}", fullmatch=True),
    st.sampled_from(["fz-dup-a", "fz-dup-b", "fz.dup.a", "fz-" + "a" * 250, "a" * 254]),
    st.text(min_size=1, max_size=70),
)
RUNNER_NAMES = st.one_of(
    st.sampled_from(["r", "tok_a", "tok-a", "tok.a", "a" * 63, "a" * 64, "UPPER", "-x", ""]),
    st.text(min_size=0, max_size=80),
)


def _set(spec: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    node: Any = spec
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                return
        elif isinstance(node, dict):
            if key not in node or not isinstance(node[key], (dict, list)):
                node[key] = [] if isinstance(nxt, int) else {}
            if isinstance(node[key], list) and isinstance(nxt, int) and not node[key]:
                node[key].append({})
        else:
            return
        node = node[key]
    last = path[-1]
    if isinstance(node, dict) and not isinstance(last, int):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            node.pop(last)
        else:
            node[last] = value


# Paths that set the number of worker processes per pod: the fuzzer also tries impossible but
# plausible values there (a non-integral worker count, more GPUs than any node has).
WORKER_PATHS = {
    ("runners", 0, "resources", "cpu"),
    ("runners", 0, "resources", "nvidia.com/gpu"),
    ("runners", 0, "workersPerResource"),
}
IMPOSSIBLE = [9, 64, "100", "0", 0, "0.001", 0.001, 0.5, 1.5, "64", 4096, "100000"]

# Any character, emoji and other non-BMP ones included, in env values; env names from any
# alphabet (the CRD accepts only C identifiers and names the field when it refuses).
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
ENV_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(["ÜBER", "名前", "MODEL😀", "A-B", "1ST", "A B", "", "a" * 300]),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30),
)

mutation = st.one_of(
    st.tuples(st.just("wrong"), st.sampled_from(PATHS), st.sampled_from(WRONG)),
    st.tuples(st.just("huge"), st.sampled_from(PATHS), st.sampled_from(HUGE)),
    st.tuples(
        st.just("impossible"), st.sampled_from(sorted(WORKER_PATHS)), st.sampled_from(IMPOSSIBLE)
    ),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("runner-name"), st.just(("runners", 0, "name")), RUNNER_NAMES),
    st.tuples(st.just("second-runner"), st.just(("runners",)), RUNNER_NAMES),
    st.tuples(st.just("gpus"), st.just(("runners", 0)), st.integers(1, 64)),
    st.tuples(st.just("unicode-env"), st.just(("env",)), st.tuples(ENV_NAMES, ANY_TEXT)),
)


def build(name: str, mutations: list[tuple[str, tuple[Any, ...], Any]]) -> dict[str, Any]:
    body = rsvc(name, [runner("r")])
    spec = body["spec"]
    for kind, path, value in mutations:
        if kind == "delete":
            _set(spec, path, None, delete=True)
        elif kind == "second-runner" and isinstance(spec.get("runners"), list):
            spec["runners"].append(runner(value))
        elif kind == "gpus" and isinstance(spec.get("runners"), list) and spec["runners"]:
            first = spec["runners"][0]
            if isinstance(first, dict):
                first["supportedResources"] = ["nvidia.com/gpu", "cpu"]
                first["resources"] = {"cpu": "1", "nvidia.com/gpu": value}
        elif kind == "unicode-env":
            env_name, env_value = value
            spec["env"] = [{"name": env_name, "value": env_value * 50}]
        else:
            _set(spec, path, copy.deepcopy(value))
    return body


def _hpas_without_status(cluster: ClusterInfo, ns: str) -> list[str]:
    listed = kubectl_json(cluster, "get", "hpa", "-n", ns)
    return [
        h["metadata"]["name"]
        for h in listed["items"]
        if not (h.get("status") or {}).get("conditions")
    ]


MANY_PODS = 100


def _wanting_many_pods(cluster: ClusterInfo, ns: str) -> set[str]:
    """Services one of whose components asks for MANY_PODS or more, itself or through its
    autoscaler's floor."""

    def pods(component: dict[str, Any]) -> int:
        floor = (component.get("autoscaling") or {}).get("minReplicas", 0)
        return max(int(component.get("replicas", 1)), int(floor))

    return {
        b["metadata"]["name"]
        for b in services(cluster, ns)
        if any(
            pods(c) >= MANY_PODS
            for c in [*b["spec"].get("runners", []), b["spec"].get("apiServer") or {}]
        )
    }


def _still_scaling(cluster: ClusterInfo, ns: str) -> set[str]:
    """Services (their label values) some of whose Deployments still have pods to create."""
    listed = kubectl_json(cluster, "get", "deploy", "-n", ns)
    return {
        d["metadata"]["labels"][LABEL_SERVICE]
        for d in listed["items"]
        if (d.get("status") or {}).get("replicas", 0) != d["spec"].get("replicas", 1)
    }


def _delete_children_of(cluster: ClusterInfo, ns: str, names: set[str]) -> None:
    """Delete what deleted services leave to the garbage collector, one request per kind: the
    collector would take one request per pod at the controller-manager's rate, for minutes.
    The ReplicaSet controller sends the creates it had queued even after its ReplicaSet is gone,
    so the pods are deleted again until none is left."""
    # The children carry the service's label value, which differs from a name too long for it.
    selector = f"{LABEL_SERVICE} in ({','.join(sorted(label_value(n) for n in names))})"
    # Deployments before ReplicaSets before pods, so that no controller makes them again.
    paths = [
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        f"/apis/apps/v1/namespaces/{ns}/replicasets",
        f"/api/v1/namespaces/{ns}/pods",
    ]
    # Grace 0: the pods the fake nodes run would otherwise wait for kwok to end them.
    params = {"labelSelector": selector, "gracePeriodSeconds": "0"}
    deadline = time.monotonic() + 120
    with api_client(cluster, timeout=60) as api:
        for path in paths:
            answer = api.delete(path, params=params)
            assert answer.status_code == 200, answer.text[:500]
        quiet = 0  # listings in a row that found nothing: the queued creates have all landed
        while quiet < 2:
            time.sleep(2)
            left = kubectl_json(cluster, "get", "deploy,rs,pods", "-n", ns, "-l", selector)
            kinds = Counter(o["kind"] for o in left["items"])
            assert time.monotonic() < deadline, f"children outlived their service: {kinds}"
            quiet = 0 if kinds else quiet + 1
            if kinds:
                api.delete(paths[-1], params=params)


def _field_named(answer: dict[str, Any]) -> bool:
    causes = (answer.get("details") or {}).get("causes") or []
    message = str(answer.get("message", ""))
    named = any(c.get("field") not in (None, "", "<nil>") for c in causes)
    return named or "spec." in message or "metadata." in message or ".name" in message


def test_fuzzed_manifests_are_rejected_or_reported_and_never_crash_the_operator(
    cluster: ClusterInfo, tmp_path: Path, long_run: bool, figures: Figures
) -> None:
    install_crd(cluster)
    ns = new_namespace(cluster, "kr-rel-fuzz")
    op = OperatorProcess(cluster, tmp_path, f"--namespace={ns}", name="fuzz")
    outcomes: Counter[str] = Counter()
    rejected_fields: Counter[str] = Counter()
    accepted: list[str] = []
    # A new seed every run, so that every CI run tries other manifests; printed (in the
    # figures and on failure) so that a failing run can be replayed with KUBERUNNER_FUZZ_SEED.
    fuzz_seed = int(os.environ.get("KUBERUNNER_FUZZ_SEED") or secrets.randbits(32))
    figures("seed", f"KUBERUNNER_FUZZ_SEED={fuzz_seed}")
    print(f"fuzz seed: KUBERUNNER_FUZZ_SEED={fuzz_seed}")
    try:
        op.wait_ready()
        path = RSVC_PATH.format(ns=ns)
        with api_client(cluster, timeout=30) as api:

            @seed(fuzz_seed)
            @settings(
                max_examples=600 if long_run else 100,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(name=NAMES, mutations=st.lists(mutation, min_size=1, max_size=3))
            def one(name: str, mutations: list[tuple[str, tuple[Any, ...], Any]]) -> None:
                body = build(name, mutations)
                r = api.post(path, json=body)
                if r.status_code == 201:
                    outcomes["accepted"] += 1
                    accepted.append(r.json()["metadata"]["name"])
                    return
                answer = r.json()
                outcomes[f"rejected-{r.status_code}-{answer.get('reason')}"] += 1
                assert r.status_code in (400, 409, 422), (r.status_code, r.text[:500])
                if r.status_code == 422:
                    assert _field_named(answer), answer
                    for cause in (answer.get("details") or {}).get("causes") or []:
                        if cause.get("field") != "<nil>":  # "other rules not checked"
                            rejected_fields[str(cause.get("field", "?"))] += 1
                else:
                    assert answer.get("message"), answer

            one()
        figures("manifests", sum(outcomes.values()))
        figures("outcomes", dict(outcomes))
        figures("top_rejected_fields", dict(rejected_fields.most_common(8)))
        assert accepted, "the fuzzer never produced an acceptable manifest"

        # Every accepted service is reported on: status for its generation, with Ready True
        # or Ready False and a reason.
        def unreported() -> list[str]:
            missing = []
            for body in services(cluster, ns):
                status = body.get("status") or {}
                ready = ready_condition(body)
                reported = status.get("observedGeneration") == body["metadata"]["generation"]
                if not (reported and ready.get("status") in ("True", "False")):
                    missing.append(body["metadata"]["name"])
                elif ready["status"] == "False" and not ready.get("reason"):
                    missing.append(body["metadata"]["name"] + " (no reason)")
            return missing

        deadline = time.monotonic() + 90 + len(accepted)
        left = unreported()
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = unreported()
        if left:
            detail = {
                b["metadata"]["name"]: {"spec": b["spec"], "status": b.get("status")}
                for b in services(cluster, ns)
                if b["metadata"]["name"] in left
            }
            raise AssertionError(
                f"accepted services never reported: {detail}\noperator log:\n{op.log()[-4000:]}"
            )
        reasons = Counter(
            ready_condition(b).get("reason") or "Ready" for b in services(cluster, ns)
        )
        figures("accepted_reported_as", dict(reasons))

        # No hot loop: once everything is reported, an idle window has no reconcile at all.
        # Two kinds of services are not idle and are deleted first: those whose apply the API
        # server refused (ApplyFailed), retried by design with a backoff that doubles up to
        # 2 minutes, and those that want so many pods (the fuzzer tries 1000) that the ReplicaSet
        # controller, at 20 requests/s, creates them for minutes: each pod a real change.
        refused = {
            b["metadata"]["name"]
            for b in services(cluster, ns)
            if ready_condition(b).get("reason") == "ApplyFailed"
        }
        crowded = _wanting_many_pods(cluster, ns) - refused
        figures(
            "deleted_before_idle_window", {"ApplyFailed": len(refused), "many_pods": len(crowded)}
        )
        if refused or crowded:
            kubectl(cluster, "delete", "rsvc", "-n", ns, "--wait=true", *refused, *crowded)
        if crowded:
            _delete_children_of(cluster, ns, crowded)
        # The others settle: every pod created.
        wait_for(
            lambda: not _still_scaling(cluster, ns),
            timeout=120,
            interval=1,
            message="every deployment to create all its pods",
        )
        # The HPA controller writes each autoscaler's first status up to 15 s (its sync period)
        # after creation: a real change that the operator reads, so the window starts after it.
        deadline = time.monotonic() + 60
        while _hpas_without_status(cluster, ns) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _hpas_without_status(cluster, ns), "the HPA controller never synced"
        time.sleep(5)
        before = op.metric("kuberunner_operator_reconcile_total")
        idle = 15.0
        time.sleep(idle)
        delta = op.metric("kuberunner_operator_reconcile_total") - before
        figures(
            "reconciles_in_idle_window",
            f"{delta:g} in {idle:g} s for {len(services(cluster, ns))} services",
        )
        assert delta == 0, "the operator keeps reconciling idle services"
        op.alive_or_raise()
        log = op.log()
        assert "Traceback" not in log
        figures("operator_log_lines", len(log.splitlines()))
    finally:
        op.kill()
        op.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)
