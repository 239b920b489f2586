"""train: the CNN on the tiny data, logged per epoch with DVCLive."""

import json

import keras
import numpy as np
import pytest
import yaml
from conftest import write_params

from fashion_shap.model import load_model, set_seed
from fashion_shap.params import PipelineError
from stages.train import STEPS_PER_EXECUTION, compile_model, main

# One epoch on the synthetic data, whose class is a bright row band, classified all 60 test images
# right for every train.seed from 1 to 10 (and 64-78 % of the training images while it learned them);
# chance is 0.1.
LEARNED = 0.9


def test_the_saved_model_has_learned_the_synthetic_classes_as_logged(prepared):
    metrics = json.loads((prepared / "metrics/train/metrics.json").read_text())
    assert set(metrics["train"]) == set(metrics["eval"]) == {"accuracy", "loss"}
    assert metrics["eval"]["accuracy"] >= LEARNED

    # The weights file holds the model of the last epoch: its test loss is the one DVCLive logged.
    model = load_model(prepared / "models/model.weights.h5")
    x_test, y_test = np.load(prepared / "data/test/x.npy"), np.load(prepared / "data/test/y.npy")
    probabilities = model.predict(x_test, verbose=0)
    assert np.mean(probabilities.argmax(axis=1) == y_test) >= LEARNED
    loss = -np.mean(np.log(probabilities[np.arange(len(y_test)), y_test]))
    assert loss == pytest.approx(metrics["eval"]["loss"], rel=1e-4)

    for name in ("train/accuracy.tsv", "eval/accuracy.tsv", "train/loss.tsv", "eval/loss.tsv"):
        lines = (prepared / "metrics/train/plots/metrics" / name).read_text().splitlines()
        assert len(lines) == 1 + 1  # a header and one epoch


@pytest.fixture
def train_params(prepared, tmp_path, monkeypatch) -> dict:
    """The prepared directory's params, to change and write in tmp_path, the working directory."""
    monkeypatch.chdir(tmp_path)
    return yaml.safe_load((prepared / "params.yaml").read_text())


def train_on_prepared(prepared, model: str, live_dir: str) -> None:
    main([str(prepared / "data/train"), str(prepared / "data/test"), model, live_dir])


def test_the_weights_file_has_the_same_bytes_whatever_the_process_built_before(prepared, tmp_path, train_params):
    """Keras numbers layer names per process (dense, dense_1, ...) and the file records them."""
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # a model built before training
    write_params(tmp_path, train_params)
    train_on_prepared(prepared, "model.weights.h5", "live")
    assert (tmp_path / "model.weights.h5").read_bytes() == (prepared / "models/model.weights.h5").read_bytes()


def test_two_epochs_log_two_rows_and_nonpositive_epochs_fail(prepared, tmp_path, train_params):
    train_params["train"]["epochs"] = 2
    write_params(tmp_path, train_params)
    train_on_prepared(prepared, "model.weights.h5", "live")
    assert len((tmp_path / "live/plots/metrics/eval/loss.tsv").read_text().splitlines()) == 1 + 2

    train_params["train"]["epochs"] = 0
    write_params(tmp_path, train_params)
    with pytest.raises(PipelineError, match="train.epochs must be positive, got 0"):
        train_on_prepared(prepared, "other.weights.h5", "other")
    assert not (tmp_path / "other.weights.h5").exists() and not (tmp_path / "other").exists()


def test_learning_rate_written_as_1e_3_gets_a_hint(prepared, tmp_path, train_params):
    train_params["train"]["learning_rate"] = "1e-3"  # what YAML 1.1 makes of an unquoted 1e-3
    write_params(tmp_path, train_params)
    with pytest.raises(PipelineError, match=r"train.learning_rate must be float, got '1e-3' \(write floats like 1.0e-3"):
        train_on_prepared(prepared, "model.weights.h5", "live")


def test_several_batches_per_call_train_the_same_weights_as_one(prepared):
    """STEPS_PER_EXECUTION is speed alone: with dropout (random masks) too, the weights are bit for bit those
    of one batch per call."""
    x, y = np.load(prepared / "data/train/x.npy"), np.load(prepared / "data/train/y.npy")
    architecture = {"conv_filters": [4], "kernel_size": 3, "pool_size": 2, "padding": "valid", "dense_units": [8],
                    "dropout": 0.3, "batch_norm": False}
    weights = []
    for steps in (1, STEPS_PER_EXECUTION):
        keras.backend.clear_session()
        set_seed(1)
        model = compile_model(architecture, 1e-3, steps)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 25 batches an epoch: a partial last call too
        weights.append(model.get_weights())
    assert STEPS_PER_EXECUTION > 1
    for one, many in zip(*weights):
        assert one.tobytes() == many.tobytes()
