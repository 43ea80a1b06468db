"""The example RunnerServices name real runnables whose traits match what the YAML declares,
and those runnables behave as their comments say (through the public Runner API)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberunner import Runner
from kuberunner.examples.runnables import Embedder, SentimentClassifier, TextGenerator, Tokenizer
from kuberunner_operator.models import RunnerServiceSpec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def _import(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _runners() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in EXAMPLES:
        spec = RunnerServiceSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
        found += [(f"{path.name}:{r.name}", r.model_dump()) for r in spec.runners]
    return found


def test_every_example_is_covered() -> None:
    assert len(EXAMPLES) >= 4
    assert len(_runners()) >= 5


@pytest.mark.parametrize(("where", "runner"), _runners(), ids=[w for w, _ in _runners()])
def test_example_traits_match_the_runnable(where: str, runner: dict[str, Any]) -> None:
    cls = _import(runner["runnable"])
    assert tuple(runner["supported_resources"]) == tuple(cls.SUPPORTED_RESOURCES), where
    assert runner["supports_cpu_multi_threading"] == cls.SUPPORTS_CPU_MULTI_THREADING, where


def test_example_api_service_imports_and_lists_its_runners() -> None:
    path = next(p for p in EXAMPLES if p.name == "multi-runner-api.yaml")
    spec = yaml.safe_load(path.read_text())["spec"]
    svc = _import(spec["apiServer"]["service"])
    assert sorted(r.name for r in svc.runners) == sorted(r["name"] for r in spec["runners"])


def test_manifest_of_the_example_service_matches_the_example_traits() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kuberunner", "manifest", "kuberunner.examples.service:svc",
         "--image", "img"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    generated = {r["name"]: r for r in yaml.safe_load(done.stdout)["spec"]["runners"]}
    path = next(p for p in EXAMPLES if p.name == "multi-runner-api.yaml")
    for runner in yaml.safe_load(path.read_text())["spec"]["runners"]:
        assert generated[runner["name"]]["runnable"] == runner["runnable"]


def test_sentiment_scores_concurrent_batches() -> None:
    runner = Runner(SentimentClassifier, name="sentiment")
    runner.init_local(quiet=True)
    try:
        good, bad, neutral = runner.predict.run(["great fast love", "awful slow", "a table"])
    finally:
        runner.destroy()
    assert good > 0.9
    assert bad < -0.9
    assert neutral == 0.0


async def test_text_generator_streams_deterministically() -> None:
    runner = Runner(TextGenerator, name="llm")
    runner.init_local(quiet=True)
    try:
        first = [c async for c in runner.generate.async_stream("hello", max_tokens=4)]
        again = [c async for c in runner.generate.async_stream("hello", max_tokens=4)]
        other = [c async for c in runner.generate.async_stream("bye", max_tokens=4)]
    finally:
        runner.destroy()
    assert len(first) == 4
    assert first == again
    assert first != other


def test_tokenizer_and_embedder_compose() -> None:
    tokenizer, embedder = Runner(Tokenizer, name="tok"), Runner(Embedder, name="emb")
    tokenizer.init_local(quiet=True)
    embedder.init_local(quiet=True)
    try:
        tokens = tokenizer.tokenize.run(["Hello World", "hello"])
        vectors = embedder.embed.run(tokens)
    finally:
        tokenizer.destroy()
        embedder.destroy()
    assert tokens == [["hello", "world"], ["hello"]]
    assert all(abs(sum(v * v for v in vec) - 1.0) < 1e-9 for vec in vectors)
    assert vectors[0] != vectors[1]
