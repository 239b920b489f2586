"""trust: the checks and diagnostics on cases whose answer is known, and the stage on tiny data."""

import json

import keras
import numpy as np
import pytest
import yaml
from conftest import assert_one_line_error, declared_outs, dvc, pipeline_stages, run_stage, set_param, write_params
from keras import layers

from fashion_shap.params import PipelineError
from fashion_shap.trust.claims import claims_summary
from fashion_shap.trust.convergence import correlation, disjoint_backgrounds, images_outside, relative_distance, slope
from fashion_shap.trust.deletion import area, deletion_metrics, deletion_test
from fashion_shap.trust.diagnostics import concentration, diagnostics, reference_norms
from fashion_shap.trust.figures import most_moved
from fashion_shap.trust.randomization import lab_rule_maps, randomized_values, rank_correlation
from fashion_shap.trust.rules import RULES, explain_all, predicted_maps, rule_explainers, rule_maps
from stages.trust import check_pool

SIDE = 6
PIXEL = (2, 3)  # the only pixel the one-pixel model looks at
OUTPUTS = ["trust.json", "deletion.csv", "convergence.csv", "randomization.png", "backgrounds.png"]


def one_pixel_model() -> keras.Model:
    """Return a model of the supported family whose output depends on pixel PIXEL only: class 0 when it is bright."""
    inputs = keras.Input(shape=(SIDE, SIDE, 1))
    x = layers.Conv2D(1, 1, activation="relu")(inputs)
    x = layers.MaxPooling2D(1)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    conv, _, _, dense, output = model.layers[1:]
    conv.set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    kernel = np.zeros((SIDE * SIDE, 1))
    kernel[PIXEL[0] * SIDE + PIXEL[1]] = 1.0
    dense.set_weights([kernel, np.zeros(1)])
    output.set_weights([np.array([[5.0, -5.0]]), np.zeros(2)])
    return model


def small_model(seed: int = 0) -> keras.Model:
    """Return a random model of the lab's kind on 8x8 images with 10 classes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(8, 8, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
    x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def random_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 8, 8, 1), dtype=np.float32)


def speckled(count: int, seed: int, pixel: float) -> np.ndarray:
    """Return random dim images with PIXEL set to pixel."""
    images = np.random.default_rng(seed).uniform(0.0, 0.3, (count, SIDE, SIDE, 1)).astype(np.float32)
    images[:, PIXEL[0], PIXEL[1]] = pixel
    return images


def test_one_pixel_model_gets_all_attribution_there_and_passes_the_deletion_test():
    model = one_pixel_model()
    images, background = speckled(4, 0, 1.0), speckled(12, 1, 0.0)
    predicted = np.zeros(len(images), dtype=int)  # class 0, the pixel being bright
    maps = rule_maps(rule_explainers(model, chunk_size=5), background, images, predicted)
    elsewhere = np.ones((SIDE, SIDE), dtype=bool)
    elsewhere[PIXEL] = False
    for name in RULES:
        assert maps[name].shape == images.shape and np.abs(maps[name][:, elsewhere]).max() == 0.0
    assert maps["shap"][:, PIXEL[0], PIXEL[1], 0].min() > 0.4  # from about 0.5 to about 1

    curves = deletion_test(model, images, maps, background.mean(axis=0), 36, 5, np.random.default_rng(0))
    metrics = deletion_metrics(curves, RULES)
    # Each rule's order removes the pixel first: the probability falls to 0.5 at once; reverse order keeps it last.
    for name in RULES:
        rule = metrics[name]
        assert rule["auc_rule_order"] < 0.52 < metrics["auc_random_order"] < rule["auc_reverse_order"]
        assert metrics[name]["faithful_share"] == 1.0
    assert area(curves["random_order"]).shape == (4,)


@pytest.mark.parametrize("rows", [[0, 2], [0, 1, 2, 3]])
def test_predicted_maps_take_known_rows_and_explain_the_others(rows):
    model, images, background = small_model(), random_images(4, 0), random_images(6, 1)
    explainers, classes = rule_explainers(model, chunk_size=4), np.array([3, 1, 4, 1])
    known = explain_all(explainers, background, images[rows])
    maps = predicted_maps(explainers, background, images, classes, np.array(rows), known)
    for name, expected in rule_maps(explainers, background, images, classes).items():
        np.testing.assert_allclose(maps[name], expected, rtol=1e-5, atol=1e-8)


def test_identical_backgrounds_give_distance_zero_and_disjoint_ones_do_not():
    model, images, background = small_model(), random_images(3, 0), random_images(20, 1)
    explainers = rule_explainers(model, chunk_size=4)
    first = explain_all(explainers, background[:10], images)
    same = explain_all(explainers, background[:10].copy(), images)
    other = explain_all(explainers, background[10:], images)
    for name in RULES:
        assert relative_distance(first[name], same[name]) == 0.0
        assert correlation(first[name], same[name]) == pytest.approx(1.0, abs=1e-12)
        assert relative_distance(first[name], other[name]) > 0.01
        assert correlation(first[name], other[name]) < 1.0 - 1e-6


def test_slope_of_distances_that_halve_when_the_background_quadruples_is_minus_half():
    sizes = [100, 400, 1600]
    assert slope(sizes, [0.4 / np.sqrt(size) for size in sizes]) == pytest.approx(-0.5)
    assert slope(sizes, [0.3, 0.3, 0.3]) == pytest.approx(0.0, abs=1e-12)  # maps that do not settle


def test_concentration_of_one_dominant_reference_and_of_equal_ones():
    dominant = concentration(np.array([1e-6, 100.0, 2e-6, 1e-6, 0.0, 3e-6]))
    assert dominant["top1_share"] == pytest.approx(1.0, abs=1e-6)
    assert dominant["effective_references"] == pytest.approx(1.0, abs=1e-6)
    equal = concentration(np.full(10, 2.5))
    assert equal == pytest.approx({"top1_share": 0.1, "top5_share": 0.5, "effective_references": 10.0})


def test_per_reference_norms_are_those_of_each_reference_explained_alone():
    """The three rules' norms come from one pass of logit values and the head multipliers: the chain rule."""
    model, images, references = small_model(), random_images(3, 0), random_images(4, 1)
    explainers = rule_explainers(model, chunk_size=4)
    multipliers = {name: explainer.head_multipliers(images, references) for name, explainer in explainers.items()}
    norms = reference_norms(explainers["logit"], images, references, multipliers)
    for index in range(len(references)):
        alone = explain_all(explainers, references[index : index + 1], images)
        for name in RULES:
            expected = np.sum(alone[name].astype(np.float64) ** 2)
            assert norms[name][index] == pytest.approx(expected, rel=1e-4)


def test_a_background_of_one_far_reference_and_copies_of_the_image_puts_everything_on_the_far_one():
    model, image = small_model(), random_images(1, 0)
    references = np.concatenate([np.zeros_like(image), np.repeat(image, 4, axis=0)])  # copies contribute nothing
    measured = diagnostics(rule_explainers(model, chunk_size=4), image, references)
    for name in RULES:
        assert measured[name]["top1_share"] == 1.0 and measured[name]["effective_references"] == 1.0
    assert measured["logit"]["max_abs_multiplier"] == 1.0  # the identity
    assert measured["shapley"]["max_abs_multiplier"] <= 0.25


def test_randomized_model_fails_the_correlation_threshold():
    model, images, background = small_model(), random_images(5, 0), random_images(10, 1)
    classes = model.predict(images, verbose=0).argmax(axis=1)
    trained = lab_rule_maps(model, background, images, 10, classes)
    every_class = explain_all(rule_explainers(model, 10), background, images)["shap"]
    np.testing.assert_allclose(trained, every_class[np.arange(len(images)), ..., classes], rtol=1e-5, atol=1e-8)
    cascade = randomized_values(model, images, background, 0, 10, classes)
    assert len(cascade) == 3  # output, dense, conv
    assert rank_correlation(trained, trained) == pytest.approx(1.0, abs=1e-12)
    assert rank_correlation(trained, cascade[-1]) < 0.5  # params.yaml's threshold
    np.testing.assert_array_equal(cascade[-1], randomized_values(model, images, background, 0, 10, classes)[-1])


def test_images_outside_leaves_out_the_background():
    images = np.arange(5 * 4, dtype=np.float32).reshape(5, 2, 2, 1)
    np.testing.assert_array_equal(images_outside(images, images[[3, 1]]), images[[0, 2, 4]])


def test_disjoint_backgrounds_share_no_image():
    pool = np.arange(30, dtype=np.float32).reshape(30, 1, 1, 1)
    backgrounds = disjoint_backgrounds(pool, 6, 4, np.random.default_rng(0))
    drawn = np.concatenate([b.ravel() for b in backgrounds])
    assert [len(b) for b in backgrounds] == [6] * 4 and len(set(drawn.tolist())) == 24


def test_most_moved_picks_the_images_whose_maps_of_their_class_differ_most():
    values = np.ones((5, 2, 2, 1, 3))
    other = values.copy()
    other[[1, 3, 4], 0, 0, 0, [2, 0, 1]] = [3.0, 2.0, 1.5]  # each image's own class moves by 2, 1 and 0.5
    other[0, 0, 0, 0, 1] = 9.0  # not image 0's class
    assert most_moved(values, other, np.array([0, 2, 1, 0, 1]), 2).tolist() == [1, 3]


def test_claims_summary_counts_the_backgrounds_where_each_reading_held():
    claims = [
        {"coat": {"holds": True, "shared_top3": 3},
         "sleeves": {"holds": True, "t_shirt_sum": 0.2, "pullover_sum": -1.0}},
        {"coat": {"holds": False, "shared_top3": 2},
         "sleeves": {"holds": True, "t_shirt_sum": 0.4, "pullover_sum": -2.0}},
    ]
    assert claims_summary(claims) == {
        "coat": {"held": 1, "shared_top3": {"mean": 2.5, "min": 2.0, "max": 3.0}},
        "sleeves": {"held": 2, "t_shirt_sum": pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4}),
                    "pullover_sum": {"mean": -1.5, "min": -2.0, "max": -1.0}},
    }


@pytest.mark.parametrize("change, message", [
    ({"convergence_sizes": [60]}, "trust.convergence_sizes holds 60"),
    ({"convergence_sizes": [20]}, "trust.convergence_sizes needs a size other than the background's 20"),
    ({"readings_backgrounds": 4, "readings_size": 30}, "trust.readings_backgrounds x trust.readings_size is 120"),
])
def test_pool_too_small_for_the_disjoint_backgrounds_is_named(change, message):
    params = {"convergence_sizes": [5], "readings_backgrounds": 2, "readings_size": 10}
    check_pool(params, 100, 20)  # a pool of 100 outside a background of 20 is enough for these
    with pytest.raises(PipelineError, match=message):
        check_pool(params | change, 100, 20)


def trust_params(prepared, tmp_path, **changes) -> None:
    """Write the prepared directory's params.yaml into tmp_path with a small trust section and these changes."""
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["trust"].update(diagnostics_size=5, readings_backgrounds=2, readings_size=10, **changes)
    write_params(tmp_path, params)


def stage_args(prepared, tmp_path) -> list[str]:
    inputs = ("models/model.weights.h5", "data/background.npy", "data/train", "data/test")
    return [str(prepared / path) for path in inputs] + [str(tmp_path / name) for name in OUTPUTS]


@pytest.mark.slow
def test_stage_writes_metrics_curves_and_figures(prepared, tmp_path):
    trust_params(prepared, tmp_path)
    run_stage("trust", *stage_args(prepared, tmp_path), cwd=tmp_path)
    metrics = json.loads((tmp_path / "trust.json").read_text())
    assert metrics["images"] == 10 and metrics["convergence"]["images"] == 10
    assert metrics["convergence"]["compared_size"] == 20 and metrics["diagnostics"]["references"] == 5
    for name in RULES:
        assert metrics["completeness"][name]["max_additivity_error"] < 1e-4
        assert metrics["convergence"][name]["relative_l2"] > 0 and np.isfinite(metrics["convergence"][name]["slope"])
        assert 0 < metrics["diagnostics"][name]["top1_share"] <= metrics["diagnostics"][name]["top5_share"] <= 1
        assert set(metrics["readings"][name]) == {"diagonal", "coat", "sleeves"}
        assert 0 <= metrics["readings"][name]["coat"]["held"] <= 2
    assert set(metrics["randomization"]["rank_correlation"]) == {"top1_layers", "top2_layers", "top3_layers"}
    header, *rows = (tmp_path / "deletion.csv").read_text().splitlines()
    assert header.split(",") == ["fraction_removed", "random_order"] + [
        f"{name}{order}" for name in RULES for order in ("_order", "_reverse_order")]
    assert len(rows) == 8 and rows[0].startswith("0,") and rows[-1].startswith("1,")
    convergence = np.loadtxt(tmp_path / "convergence.csv", delimiter=",", skiprows=1)
    assert convergence[:, 0].tolist() == [5, 20] and convergence.shape[1] == 1 + 2 * len(RULES)
    for name in ("randomization.png", "backgrounds.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_too_large_convergence_size_is_a_one_line_error_that_writes_nothing(prepared, tmp_path):
    trust_params(prepared, tmp_path, convergence_sizes=[100])
    result = run_stage("trust", *stage_args(prepared, tmp_path), cwd=tmp_path, check=False)
    assert_one_line_error(result, "trust.convergence_sizes holds 100", "lower it in params.yaml")
    assert not any((tmp_path / name).exists() for name in OUTPUTS)


@pytest.mark.slow
@pytest.mark.parametrize(("key", "value"), [
    ("diagnostics_size", 4), ("readings_backgrounds", 3), ("readings_size", 8), ("sleeves_blank_below", 0.2),
    ("sleeves_pullover_above", 0.4),
])
def test_new_trust_params_rerun_trust_alone(project, key, value):
    """`dvc status` names the stages a change invalidates directly; no stage reads what trust writes."""
    set_param(project, "trust", key, value)
    status = json.loads(dvc("status", "--json", cwd=project).stdout)
    assert status == {"trust": [{"changed deps": {"params.yaml": {f"trust.{key}": "modified"}}}]}
    stages = pipeline_stages(project)
    trust_outs = declared_outs(stages["trust"])
    assert not any(dep.startswith(out) for stage in stages.values() for dep in stage["deps"] for out in trust_outs)
