"""Train the iris example's model and write it as JSON: `python train_iris.py OUT.json`.

Runs once, when the runner image is built, in a build stage that has scikit-learn (which ships
the iris data set); the image itself carries only the JSON weights, and `IrisClassifier` needs
nothing beyond the standard library to serve them. Standalone on purpose (no kuberunner import),
so the build stage needs scikit-learn alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def train() -> dict[str, object]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    scaler = StandardScaler().fit(data.data)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(data.data), data.target)
    accuracy = float(model.score(scaler.transform(data.data), data.target))
    return {
        "features": [str(f) for f in data.feature_names],
        "classes": [str(c) for c in data.target_names],
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": model.coef_.tolist(),
        "intercept": model.intercept_.tolist(),
        "training_accuracy": accuracy,
        "rows": data.data.tolist(),
        "targets": data.target.tolist(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: train_iris.py OUT.json", file=sys.stderr)
        return 2
    model = train()
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[1]).write_text(json.dumps(model))
    print(f"iris model written to {argv[1]}: training accuracy {model['training_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
