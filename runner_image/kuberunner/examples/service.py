"""The example API server of `examples/multi-runner-api.yaml`.

Referenced as `service: kuberunner.examples.service:svc`. `POST /embed` with `{"text": "..."}`
tokenizes on the tokenizer runner and embeds on the embedder runner, both reached over HTTP
through KUBERUNNER_RUNNER_MAP.
"""

from __future__ import annotations

from typing import Any

from kuberunner import Runner
from kuberunner.examples.runnables import Embedder, Tokenizer
from kuberunner.io import JSON
from kuberunner.service import Service

tokenizer = Runner(Tokenizer, name="tokenizer")
embedder = Runner(Embedder, name="embedder")
svc = Service("search", runners=[tokenizer, embedder])


@svc.api(input=JSON(), output=JSON())
async def embed(body: dict[str, Any]) -> dict[str, Any]:
    tokens = await tokenizer.tokenize.async_run([body["text"]])
    vectors = await embedder.embed.async_run(tokens)
    return {"tokens": tokens[0], "embedding": vectors[0]}
