"""train: the lab's CNN on the tiny data, logged per epoch with DVCLive."""

import json

import numpy as np
import yaml
from conftest import run_stage, write_params
from test_fetch import assert_one_line_error

from stages.model import build_model, load_model


def test_model_is_the_labs_cnn():
    model = build_model()
    assert [layer.__class__.__name__ for layer in model.layers] == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense",
    ]
    assert model.output_shape == (None, 10)
    assert model.count_params() == 32 * 10 + 5408 * 256 + 256 + 2570


def test_writes_weights_and_per_epoch_logs(prepared):
    model = load_model(prepared / "models/model.weights.h5")
    probabilities = model.predict(np.load(prepared / "data/test/x.npy"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    metrics = json.loads((prepared / "metrics/train/metrics.json").read_text())
    assert set(metrics["train"]) == set(metrics["eval"]) == {"accuracy", "loss"}
    for name in ("train/accuracy.tsv", "eval/accuracy.tsv", "train/loss.tsv", "eval/loss.tsv"):
        lines = (prepared / "metrics/train/plots/metrics" / name).read_text().splitlines()
        assert len(lines) == 1 + 1  # a header and one epoch


def test_two_epochs_log_two_rows_and_nonpositive_epochs_fail(prepared, tmp_path):
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["epochs"] = 2
    write_params(tmp_path, params)
    data = [str(prepared / "data/train"), str(prepared / "data/test")]
    run_stage("train", *data, "model.weights.h5", "live", cwd=tmp_path)
    assert len((tmp_path / "live/plots/metrics/eval/loss.tsv").read_text().splitlines()) == 3

    params["train"]["epochs"] = 0
    write_params(tmp_path, params)
    result = run_stage("train", *data, "other.weights.h5", "other", cwd=tmp_path, check=False)
    assert_one_line_error(result, "train.epochs must be positive")
    assert not (tmp_path / "other.weights.h5").exists()


def test_learning_rate_written_as_1e_3_gets_a_hint(prepared, tmp_path):
    text = (prepared / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["train"]["learning_rate"] = "1e-3"  # what YAML 1.1 makes of an unquoted 1e-3
    write_params(tmp_path, params)
    result = run_stage("train", str(prepared / "data/train"), str(prepared / "data/test"), "m.weights.h5", "live", cwd=tmp_path, check=False)
    assert_one_line_error(result, "train.learning_rate must be float", "1.0e-3")
