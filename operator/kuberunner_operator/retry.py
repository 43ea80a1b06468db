"""The reconcile workers and their retry policy, and the periodic resync."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from kuberunner_operator.events import namespace_terminating
from kuberunner_operator.kube import ApiError, TransportError
from kuberunner_operator.metrics import QUEUE_DEPTH, RECONCILE_DURATION, RECONCILE_TOTAL
from kuberunner_operator.reconcile import INVALID, REFUSED, reconcile
from kuberunner_operator.runtime import Runtime

log = logging.getLogger("kuberunner.operator")

# Backoff caps. A failure of this service (a webhook refusing it, say) backs off to 2 minutes.
# When the API server is unreachable or overloaded every service fails alike; retrying each
# every 5 s costs little, and a longer wait would only delay catching up once it is back.
MAX_BACKOFF = 120.0
SERVER_TROUBLE_BACKOFF = 5.0
_SERVER_TROUBLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Outcome:
    """What one reconcile came to: the metric's result label, and whether (and with which
    backoff cap) to try again."""

    result: str
    retry: bool
    cap: float = MAX_BACKOFF


def outcome_of(result: str) -> Outcome:
    if result == INVALID:  # the user must change the spec; retrying cannot help
        return Outcome("error", retry=False)
    if result == REFUSED:  # reported in status; retried with backoff (quota, webhook)
        return Outcome("error", retry=True)
    return Outcome(result, retry=False)


def outcome_of_error(exc: BaseException) -> Outcome:
    if isinstance(exc, ApiError):
        if namespace_terminating(exc):  # its objects go with it; nothing left to do
            return Outcome("success", retry=False)
        if exc.code == 409:  # lost an optimistic-concurrency race: plainly try again
            return Outcome("requeue", retry=True)
        if exc.code in _SERVER_TROUBLE:
            return Outcome("error", retry=True, cap=SERVER_TROUBLE_BACKOFF)
        return Outcome("error", retry=True)
    if isinstance(exc, TransportError):
        return Outcome("error", retry=True, cap=SERVER_TROUBLE_BACKOFF)
    return Outcome("error", retry=True)


def backoff(failures: int, cap: float) -> float:
    """Exponential per service, capped: never a hot retry loop."""
    return min(0.5 * 2.0**failures, cap)


async def worker(rt: Runtime) -> None:
    while True:
        key = await rt.queue.get()
        QUEUE_DEPTH.set(rt.queue.depth())
        start = time.perf_counter()
        outcome = Outcome("error", retry=True)
        try:
            outcome = outcome_of(await reconcile(rt, key))
        except (ApiError, TransportError) as exc:
            outcome = outcome_of_error(exc)
            if outcome.retry:  # one line, then backoff
                log.warning("reconcile %s/%s: %s: %s", key[0], key[1], type(exc).__name__, exc)
        except Exception:
            log.exception("reconcile %s/%s failed", key[0], key[1])
        finally:
            RECONCILE_DURATION.observe(time.perf_counter() - start)
            RECONCILE_TOTAL.labels(result=outcome.result).inc()
            rt.queue.done(key)
            rt.activity.last_reconcile = time.monotonic()
        st = rt.cache.services.get(key)
        if st is None:
            continue
        if outcome.retry:
            st.failures += 1
            rt.queue.add(key, backoff(st.failures, outcome.cap))
        else:
            st.failures = 0


async def resync_loop(rt: Runtime, period: float = 5.0) -> None:
    """Queue services whose last check is older than their jittered resync interval. The
    reconcile then compares the children in the cache with what it applied, and writes only
    if one is missing or was changed by someone else (events it might have missed)."""
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for key, st in list(rt.cache.services.items()):
            if st.body is not None and st.applied_at and now - st.applied_at > st.resync_after:
                st.resync = True
                rt.queue.add(key)
