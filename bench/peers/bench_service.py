"""The API server of the bench's hop: ``POST /double`` (JSON rows) calls the remote runner."""

from __future__ import annotations

from typing import Any

from bench_runnables import Doubler
from kuberunner import Runner
from kuberunner.io import NumpyNdarray
from kuberunner.service import Service

doubler = Runner(Doubler, name="doubler", max_batch_size=100)
svc = Service("bench", runners=[doubler])


@svc.api(input=NumpyNdarray(dtype="float32"), output=NumpyNdarray())
async def double(x: Any) -> Any:
    return await doubler.async_run(x)
