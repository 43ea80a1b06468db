"""The iris example serves a real model: trained as the image build trains it, served through
the Runner API, it classifies the iris data set as well as scikit-learn's own model does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuberunner.examples import iris as example
from kuberunner.examples.train_iris import main as train_main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iris") / "iris.json"
    assert train_main(["train_iris.py", str(path)]) == 0
    return path


@pytest.fixture
def runner(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv(example.MODEL_PATH_VARIABLE, str(model_path))
    example.iris.init_local(quiet=True)
    try:
        yield example.iris
    finally:
        example.iris.destroy()


def test_iris_runner_classifies_the_data_set_like_scikit_learn(
    runner: object, model_path: Path
) -> None:
    model = json.loads(model_path.read_text())
    predicted = example.iris.predict.run(model["rows"])
    truth = [model["classes"][t] for t in model["targets"]]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    assert accuracy == pytest.approx(model["training_accuracy"])
    assert accuracy > 0.95
    assert example.iris.predict.run([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]) == [
        "setosa",
        "virginica",
    ]


def test_iris_runner_rejects_a_flower_with_the_wrong_number_of_measurements(
    runner: object,
) -> None:
    with pytest.raises(ValueError, match="expected 4 measurements per flower, got 3"):
        example.iris.predict.run([[5.1, 3.5, 1.4]])
