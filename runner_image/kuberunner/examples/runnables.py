"""Example runnables referenced by `examples/*.yaml` (runnable: kuberunner.examples.runnables:X)."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator

from kuberunner import Runnable
from kuberunner.envvars import CUDA_VISIBLE_DEVICES

_POSITIVE = frozenset({"good", "great", "love", "excellent", "happy", "fast", "nice"})
_NEGATIVE = frozenset({"bad", "awful", "hate", "terrible", "sad", "slow", "broken"})


class SentimentClassifier(Runnable):
    """Scores texts in [-1, 1] from word lists; batchable, so concurrent calls share a batch."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = True

    @Runnable.method(batchable=True)
    def predict(self, texts: list[str]) -> list[float]:
        scores = []
        for text in texts:
            words = text.lower().split()
            hits = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
            scores.append(math.tanh(hits))
        return scores


class TextGenerator(Runnable):
    """Streams a deterministic continuation word by word; reports the GPUs its worker sees."""

    SUPPORTED_RESOURCES = ("nvidia.com/gpu", "cpu")
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method
    def generate(self, prompt: str, max_tokens: int = 8) -> Iterator[str]:
        seed = hashlib.sha256(prompt.encode()).digest()
        for i in range(max_tokens):
            yield f"tok{seed[i % len(seed)]} "

    @Runnable.method
    def devices(self) -> str:
        return os.environ.get(CUDA_VISIBLE_DEVICES, "")


class ImageClassifier(Runnable):
    """Classifies flattened pixel lists by mean brightness; about 1 ms of work per batch."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method(batchable=True)
    def classify(self, images: list[list[float]]) -> list[str]:
        time.sleep(0.001)
        return ["bright" if sum(px) / max(len(px), 1) > 0.5 else "dark" for px in images]


class Tokenizer(Runnable):
    """Splits texts into lowercase word tokens."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method(batchable=True)
    def tokenize(self, texts: list[str]) -> list[list[str]]:
        return [text.lower().split() for text in texts]


class Embedder(Runnable):
    """Embeds token lists into 8 dimensions by feature hashing, L2-normalised."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = True

    @Runnable.method(batchable=True)
    def embed(self, token_lists: list[list[str]]) -> list[list[float]]:
        return [_embed(tokens) for tokens in token_lists]


def _embed(tokens: list[str], dims: int = 8) -> list[float]:
    vector = [0.0] * dims
    for token in tokens:
        digest = hashlib.sha256(token.encode()).digest()
        vector[digest[0] % dims] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
