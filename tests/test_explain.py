"""explain: SHAP values of the first test image of each class, and the lab's reading of them."""

import json
import re
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import assert_as_exact_as_shap, assert_one_line_error, run_stage, write_params

from deepshap import shap_reference
from fashion_shap.data import CLASS_NAMES
from fashion_shap.model import load_model
from fashion_shap.params import PipelineError
from fashion_shap.readings import additivity_error, lab_reading, largest_positive_mass
from stages.explain import main


def test_largest_positive_mass_ignores_negative_values():
    values = np.zeros((1, 2, 2, 1, 3))
    values[0, 0, 0, 0] = [0.5, -9.0, 0.2]
    values[0, 1, 1, 0] = [0.0, 0.1, 0.4]
    assert largest_positive_mass(values).tolist() == [2]  # 0.6 beats 0.5 and 0.1


def test_lab_reading_of_known_values():
    labels = np.arange(10)
    probabilities = np.full((10, 10), 0.01)
    probabilities[labels, labels] = 0.91
    probabilities[4] = [0.0, 0.0, 0.3, 0.0, 0.6, 0.0, 0.1, 0.0, 0.0, 0.0]  # the coat
    expected = np.full(10, 0.1)
    values = np.zeros((10, 28, 28, 1, 10))
    values[:, 0, 0, 0, :] = probabilities - expected  # all of it on one pixel: exact additivity
    values[labels, 1, 1, 0, labels] += 1.0
    values[labels, 2, 2, 0, labels] -= 1.0
    reading = lab_reading(values, probabilities, expected, labels)
    assert reading["predicted_class"]["Coat"] == 4 and reading["predicted_class"]["Bag"] == 8
    assert reading["diagonal_share"] == 1.0
    assert reading["additivity_error"] < 1e-12
    assert [reading["coat_top3"][rank]["class"] for rank in "123"] == ["Coat", "Pullover", "Shirt"]
    values[0, 0, 0, 0, 0] += 0.25
    assert abs(additivity_error(values, probabilities, expected) - 0.25) < 1e-12


def test_explanations_have_shaps_layout_and_add_up(explained):
    directory = explained / "data/explanations"
    values = np.load(directory / "shap_values.npy")
    images = np.load(directory / "images.npy")
    assert values.shape == (10, 28, 28, 1, 10)
    np.testing.assert_array_equal(np.load(directory / "labels.npy"), np.arange(10))
    x_test, y_test = np.load(explained / "data/test/x.npy"), np.load(explained / "data/test/y.npy")
    for label in range(10):
        np.testing.assert_array_equal(images[label], x_test[np.nonzero(y_test == label)[0][0]])

    # Additivity, recomputed here from the model: SHAP values sum to f(x) - E[f(background)].
    model = load_model(explained / "models/model.weights.h5")
    expected = model.predict(np.load(explained / "data/background.npy"), verbose=0).mean(axis=0)
    probabilities = model.predict(images, verbose=0)
    totals = values.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(totals, probabilities - expected, atol=1e-5)

    report = json.loads((explained / "reports/explain.json").read_text())
    assert report["additivity_error"] < 1e-5
    assert report["predicted_class"] == {CLASS_NAMES[i]: int(p) for i, p in enumerate(probabilities.argmax(axis=1))}
    # The headline, for `dvc exp show`: the diagonal, and the additivity error scaled to show at 4 decimals.
    metrics = json.loads((explained / "metrics/explain.json").read_text())
    assert metrics == {"diagonal": report["diagonal_share"], "additivity_ppm": round(report["additivity_error"] * 1e6, 4)}
    timing = json.loads((explained / "metrics/timing.json").read_text())
    assert set(timing) == {"explain_s"} and timing["explain_s"] > 0


def copy_inputs(source, destination, **explain_params) -> None:
    """Copy the model, background and test data of source to destination, with explain params changed."""
    (destination / "data").mkdir(parents=True)
    for name in ("models", "data/background.npy", "data/test"):
        (shutil.copytree if (source / name).is_dir() else shutil.copy)(source / name, destination / name)
    params = yaml.safe_load((source / "params.yaml").read_text())
    params["explain"].update(explain_params)
    write_params(destination, params)


EXPLAIN_ARGS = ["models/model.weights.h5", "data/background.npy", "data/test", "data/explanations", "metrics/explain.json",
                "reports/explain.json", "metrics/timing.json"]


# The probability case runs shap twice (float32 and float64): 10 s, the quick lane's slowest test; the logit case
# runs the same stage paths in the quick lane.
@pytest.mark.parametrize("output", [pytest.param("probability", marks=pytest.mark.slow), "logit"])
def test_both_engines_give_the_same_values(explained, tmp_path, monkeypatch, output):
    copy_inputs(explained, tmp_path, engine="shap", output=output)
    monkeypatch.chdir(tmp_path)
    main(EXPLAIN_ARGS)
    copy_inputs(explained, tmp_path / "fast", engine="fast", output=output)
    monkeypatch.chdir(tmp_path / "fast")
    main(EXPLAIN_ARGS)
    reference = np.load(tmp_path / "data/explanations/shap_values.npy")
    fast = np.load(tmp_path / "fast/data/explanations/shap_values.npy")
    assert np.abs(reference).max() > 1e-3
    if output == "probability":
        images = np.load(tmp_path / "data/explanations/images.npy")
        exact = shap_reference(load_model(tmp_path / EXPLAIN_ARGS[0]), np.load(tmp_path / EXPLAIN_ARGS[1]), images,
                               dtype="float64")
        assert_as_exact_as_shap(fast, reference, exact)
    else:
        np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_shapley_rule_values_add_up_and_differ_from_shaps(explained, tmp_path, monkeypatch):
    copy_inputs(explained, tmp_path, softmax_rule="shapley")
    monkeypatch.chdir(tmp_path)
    main(EXPLAIN_ARGS)
    report = json.loads((tmp_path / "reports/explain.json").read_text())
    assert report["additivity_error"] < 1e-5
    shapley = np.load(tmp_path / "data/explanations/shap_values.npy")
    shap_rule = np.load(explained / "data/explanations/shap_values.npy")
    assert np.abs(shapley - shap_rule).max() > 1e-4 * np.abs(shap_rule).max()


@pytest.mark.parametrize("change, message", [
    ({"engine": "fastest"}, "explain.engine must be one of fast, accelerated, shap, got 'fastest'"),
    ({"output": "logits"}, "explain.output must be one of probability, logit, got 'logits'"),
    ({"softmax_rule": "exact"}, "explain.softmax_rule must be one of shap, shapley, got 'exact'"),
    ({"engine": "shap", "softmax_rule": "shapley"}, "explain.engine: shap has only shap's softmax rule; set "
                                                     "explain.softmax_rule: shap or explain.engine: fast"),
    ({"chunk_size": 0}, "explain.chunk_size must be positive"),
])
def test_bad_explain_params_are_clear_errors(explained, tmp_path, monkeypatch, change, message):
    copy_inputs(explained, tmp_path, **change)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=re.escape(message)):
        main(EXPLAIN_ARGS)
    assert not (tmp_path / "data/explanations").exists()


@pytest.mark.slow
def test_unknown_engine_is_a_one_line_error_on_the_command_line(explained, tmp_path):
    copy_inputs(explained, tmp_path, engine="shap", softmax_rule="shapley")
    result = run_stage("explain", *EXPLAIN_ARGS, cwd=tmp_path, check=False)
    assert_one_line_error(result, "explain.engine: shap has only shap's softmax rule")
    assert not (tmp_path / "data/explanations").exists()


def limit_file_size(size: int):
    """Return a preexec_fn that limits the files the process writes to size bytes: a full disk, as the stage meets it
    (a write fails with EFBIG, as with ENOSPC; Python ignores the SIGXFSZ that comes with it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


@pytest.mark.slow
@pytest.mark.parametrize("previous", [True, False])
def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_last_good_explanations(explained, tmp_path, previous):
    copy_inputs(explained, tmp_path)
    if previous:
        shutil.copytree(explained / "data/explanations", tmp_path / "data/explanations")
    before = {path.name: path.read_bytes() for path in (tmp_path / "data/explanations").glob("*")}
    # Room for the images (10 x 28 x 28 float32, 31 kB) but not for the values (ten times that).
    result = subprocess.run([sys.executable, "-m", "stages.explain", *EXPLAIN_ARGS], cwd=tmp_path, capture_output=True,
                            text=True, check=False, preexec_fn=limit_file_size(100_000))
    assert_one_line_error(result, "cannot write data/explanations: File too large")
    after = {path.name: path.read_bytes() for path in (tmp_path / "data/explanations").glob("*")}
    assert after == before  # the last good explanations whole, or none
    assert not list((tmp_path / "data").glob(".tmp.*"))  # nor the half-written one
