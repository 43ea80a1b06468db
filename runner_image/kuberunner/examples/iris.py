"""A real model: iris species from flower measurements, trained on scikit-learn's iris data.

The weights (a standardised multinomial logistic regression) are trained when the runner image
is built (`train_iris.py`, in a build stage) and shipped as JSON at `DEFAULT_MODEL_PATH`;
serving needs only the standard library. `examples/iris.yaml` runs it behind an API server.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from kuberunner import Runnable, Runner
from kuberunner.io import JSON
from kuberunner.service import Service

DEFAULT_MODEL_PATH = "/opt/kuberunner/models/iris.json"
MODEL_PATH_VARIABLE = "IRIS_MODEL_PATH"


class IrisClassifier(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        path = Path(os.environ.get(MODEL_PATH_VARIABLE) or DEFAULT_MODEL_PATH)
        model = json.loads(path.read_text())
        self.classes: list[str] = model["classes"]
        self.mean: list[float] = model["mean"]
        self.scale: list[float] = model["scale"]
        self.coef: list[list[float]] = model["coef"]
        self.intercept: list[float] = model["intercept"]

    def probabilities(self, row: list[float]) -> list[float]:
        if len(row) != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} measurements per flower, got {len(row)}")
        x = [(v - m) / s for v, m, s in zip(row, self.mean, self.scale, strict=True)]
        logits = [
            b + sum(w * v for w, v in zip(weights, x, strict=True))
            for weights, b in zip(self.coef, self.intercept, strict=True)
        ]
        top = max(logits)
        exps = [math.exp(z - top) for z in logits]
        total = sum(exps)
        return [e / total for e in exps]

    @Runnable.method(batchable=True)
    def predict(self, rows: list[list[float]]) -> list[str]:
        out = []
        for row in rows:
            probs = self.probabilities(row)
            out.append(self.classes[probs.index(max(probs))])
        return out


iris = Runner(IrisClassifier, name="iris")
svc = Service("iris", runners=[iris])


@svc.api(input=JSON(), output=JSON())
async def classify(body: dict[str, Any]) -> dict[str, Any]:
    """`{"flowers": [[sepal length, sepal width, petal length, petal width], ...]}` (cm)."""
    flowers = body["flowers"]
    return {"species": await iris.predict.async_run(flowers)}
