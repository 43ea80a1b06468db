"""Rollouts that cannot wedge, and what runner pods say while they start.

- autoRollback: a runner whose new revision stalled (RolloutStalled) goes back to the pod
  template of its last Ready revision, taken from that revision's ReplicaSet as
  `kubectl rollout undo` does. The RunnerService's spec is not edited; the runner's status
  says `RolledBack`, and the operator leaves that Deployment's template alone until the spec
  changes (a new generation is a new rollout).
- /readyz: an unready runner pod is asked its /readyz answer over the pod network (the port it
  already serves, no API right), so status can say which workers load and for how long.

The decisions are pure functions; `roll_back` and `fetch_readyz` do the I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from kuberunner_operator import naming
from kuberunner_operator.cache import ServiceKey
from kuberunner_operator.kinds import DEPLOYMENT, REPLICASET
from kuberunner_operator.models import RolledBackStatus
from kuberunner_operator.render.desired import DesiredComponent, Rendered
from kuberunner_operator.runtime import Runtime
from kuberunner_operator.startup import creation_key, main_container
from kuberunner_operator.status import REVISION_ANNOTATION, ROLLOUT_STALLED

log = logging.getLogger("kuberunner.operator")

Obj = Mapping[str, Any]
# At most this many pods of one service are asked their /readyz per pass.
MAX_READYZ_PODS = 8
_CAUSE = re.compile(r"; cause: ([A-Za-z]+): ")


def held_deployments(rendered: Rendered, previous: Obj | None, generation: int) -> set[str]:
    """Deployments of runners rolled back at this generation: applying the spec's template
    would start the failed rollout again."""
    held: set[str] = set()
    entries = {e.get("name"): e for e in (previous or {}).get("runners") or []}
    for plan in rendered.runners:
        rolled = (entries.get(plan.name) or {}).get("rolledBack") or {}
        if rolled.get("generation") == generation:
            held.add(plan.object_name)
    return held


def rollback_wanted(plan: DesiredComponent, entry: Obj) -> int | None:
    """The revision to return a runner to (its status `entry` as compute_status wrote it), or
    None: only with autoRollback, a stalled rollout, and a different revision that was Ready."""
    if not plan.auto_rollback or entry.get("reason") != ROLLOUT_STALLED:
        return None
    if entry.get("rolledBack"):
        return None
    target = entry.get("lastReadyRevision")
    if not isinstance(target, int) or target == entry.get("revision"):
        return None
    return target


def stalled_cause(message: str) -> str:
    """The pods' reason named in a RolloutStalled message, else RolloutStalled."""
    found = _CAUSE.search(message)
    return found.group(1) if found else ROLLOUT_STALLED


def revision_template(
    replica_sets: Sequence[Obj], deployment_uid: str, revision: int
) -> dict[str, Any] | None:
    """The pod template of `revision` of the Deployment, from its ReplicaSet, without the
    label the Deployment controller adds (it adds it again)."""
    for rs in replica_sets:
        meta = rs.get("metadata") or {}
        owned = any(ref.get("uid") == deployment_uid for ref in meta.get("ownerReferences") or [])
        if not owned or (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != str(revision):
            continue
        template: dict[str, Any] = json.loads(json.dumps((rs.get("spec") or {}).get("template")))
        labels = (template.get("metadata") or {}).get("labels") or {}
        labels.pop("pod-template-hash", None)
        return template
    return None


async def roll_back(
    rt: Runtime, key: ServiceKey, plan: DesiredComponent, entry: Obj, generation: int
) -> RolledBackStatus | None:
    """Return the runner's Deployment to its last Ready revision; None when that revision's
    ReplicaSet is gone (beyond revisionHistoryLimit), which the log says."""
    target = rollback_wanted(plan, entry)
    st = rt.cache.services.get(key)
    deployment = st.children.get((DEPLOYMENT.kind, plan.object_name)) if st else None
    if target is None or deployment is None:
        return None
    uid = str((deployment.get("metadata") or {}).get("uid"))
    selector = ",".join(f"{k}={v}" for k, v in sorted(plan.selector.items()))
    sets = await rt.kube.list(
        REPLICASET.api_version, REPLICASET.kind, key[0], label_selector=selector
    )
    template = revision_template(sets, uid, target)
    if template is None:
        log.warning(
            "rollback of %s/%s: no ReplicaSet of revision %d", key[0], plan.object_name, target
        )
        return None
    live = await rt.kube.json_patch(
        DEPLOYMENT.api_version,
        DEPLOYMENT.kind,
        plan.object_name,
        key[0],
        [{"op": "replace", "path": "/spec/template", "value": template}],
    )
    live.setdefault("kind", DEPLOYMENT.kind)
    rt.cache.record_applied(key, live)  # our own edit: not drift to repair
    message = str(entry.get("message") or "")
    log.info("rolled %s/%s back to revision %d", key[0], plan.object_name, target)
    revision = entry.get("revision")
    return RolledBackStatus(
        generation=generation,
        failed_revision=revision if isinstance(revision, int) else None,
        revision=target,
        reason=stalled_cause(message),
        message=message,
    )


def _selected(pod: Obj, selector: Mapping[str, str]) -> bool:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return not meta.get("deletionTimestamp") and all(
        labels.get(k) == v for k, v in selector.items()
    )


def readyz_targets(rendered: Rendered, pods: Sequence[Obj]) -> list[tuple[str, str]]:
    """(pod name, IP) of runner pods worth asking: running, not ready, newest first per
    runner, at most MAX_READYZ_PODS."""
    out: list[tuple[str, str]] = []
    for plan in rendered.runners:
        mine = [p for p in pods if _selected(p, plan.selector)]
        for pod in sorted(mine, key=creation_key, reverse=True):
            status = pod.get("status") or {}
            container = main_container(pod) or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            ip = status.get("podIP")
            if ip and not ready and "running" in (container.get("state") or {}):
                out.append((str((pod.get("metadata") or {}).get("name")), str(ip)))
    return out[:MAX_READYZ_PODS]


async def fetch_readyz(rt: Runtime, targets: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Pod name -> its /readyz body, for the pods that answered within the timeout."""
    timeout = rt.config.readyz_timeout
    if timeout <= 0 or not targets:
        return {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def one(session: aiohttp.ClientSession, ip: str) -> str | None:
        host = f"[{ip}]" if ":" in ip else ip
        try:
            async with session.get(f"http://{host}:{naming.PORT}/readyz") as answer:
                return (await answer.content.read(4096)).decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        answers = await asyncio.gather(*(one(session, ip) for _, ip in targets))
    return {name: text for (name, _), text in zip(targets, answers, strict=True) if text}
