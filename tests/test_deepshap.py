"""deepshap: the Explainer against shap.DeepExplainer on random models of every supported stack, compiled
against plain, and its head rules. The modules' own tests: tests/test_rules.py, test_pooling.py,
test_support.py, test_network.py, test_fused.py and test_kernels*.py."""

import itertools
import math

import keras
import numpy as np
import pytest
from conftest import assert_as_exact_as_shap
from keras import layers

from deepshap import Explainer, UnsupportedModelError, kernels_input, shap_reference
from deepshap.head import shapley_softmax


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def random_images(count, image_shape, seed):
    """Return images in [0, 1] with a blank border, as Fashion-MNIST has: flat regions tie in max-pool."""
    rng = np.random.default_rng(seed)
    images = rng.random((count,) + image_shape, dtype=np.float32)
    images[:, :3] = 0.0
    images[:, :, -2:] = 0.0
    return images


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Give every bias (positive ones make pooling ties) and batch-norm statistic random values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))
        if isinstance(layer, layers.BatchNormalization):
            for weight, low, high in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.2, 0.2),
                                      (layer.moving_mean, -0.2, 0.2), (layer.moving_variance, 0.5, 2.0)):
                weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


def stack(name: str, seed: int = 0) -> keras.Model:
    """Return a small random model of one of the supported stacks, on 14x14 one-channel images."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(14, 14, 1))
    head = "softmax"
    if name == "lab":
        x = layers.MaxPooling2D(2)(layers.Conv2D(6, 3, activation="relu")(inputs))
        x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
    elif name == "two conv blocks":
        x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
        x = layers.MaxPooling2D(2)(layers.Conv2D(6, 3, activation="relu")(x))
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    elif name == "same padding, stride 2":
        x = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(inputs)
        x = layers.MaxPooling2D(2, padding="same")(x)
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    elif name == "two hidden dense":
        x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
        x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
        x = layers.Dense(8, activation="relu")(x)
    elif name == "dropout and batch norm":
        x = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs))
        x = layers.MaxPooling2D(2)(layers.ReLU()(x))
        x = layers.Dropout(0.5)(layers.Dense(12, activation="relu")(layers.Flatten()(x)))
    elif name == "same padding and batch norm blocks":
        x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs))
        x = layers.MaxPooling2D(2)(layers.ReLU()(x))
        x = layers.MaxPooling2D(2)(layers.Conv2D(6, (3, 2), padding="same", activation="relu")(x))
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    elif name == "average pooling":
        x = layers.AveragePooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    elif name == "same padding, kernel 2":  # TensorFlow pads the input's bottom and right alone
        x = layers.MaxPooling2D(2)(layers.Conv2D(4, 2, padding="same", activation="relu")(inputs))
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    elif name == "logit head":
        x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
        x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
        head = "linear"
    outputs = layers.Dense(4, activation=head)(x)
    return randomize(keras.Model(inputs, outputs), seed)


STACKS = ["lab", "two conv blocks", "same padding, stride 2", "two hidden dense", "dropout and batch norm",
          "same padding and batch norm blocks", "same padding, kernel 2", "average pooling", "logit head"]


@pytest.mark.slow
# Every stack's logits too (shap explains them with a linear last layer): every rule below the head within 1e-5.
@pytest.mark.parametrize("name, output", [(name, "logit" if name == "logit head" else "probability") for name in STACKS]
                         + [(name, "logit") for name in STACKS if name != "logit head"])
def test_equals_shap_on_every_supported_stack(name, output):
    model = stack(name)
    background, images = random_images(50, (14, 14, 1), 1), random_images(3, (14, 14, 1), 2)
    fast = Explainer(model, output=output, chunk_size=16).shap_values(images, background)
    reference = shap_reference(model, background, images, output=output)
    assert fast.shape == reference.shape == (3, 14, 14, 1, 4)
    if output == "probability":
        assert_as_exact_as_shap(fast, reference, shap_reference(model, background, images, dtype="float64"))
    else:  # linear from the logits down: float32's rounding stays in the last bits
        largest = np.abs(reference).max()
        assert largest > 1e-3  # the comparison is not between zeros
        np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-5 * largest)


def test_lab_shapes_equal_shap():
    """The lab's own sizes (28x28, 32 filters, 256 units, 10 classes), in the quick lane."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(32, 3, activation="relu")(inputs))
    x = layers.Dense(256, activation="relu")(layers.Flatten()(x))
    model = randomize(keras.Model(inputs, layers.Dense(10, activation="softmax")(x)), 3)
    background, images = random_images(12, (28, 28, 1), 4), random_images(2, (28, 28, 1), 5)
    fast = Explainer(model, chunk_size=5).shap_values(images, background)
    exact = shap_reference(model, background, images, dtype="float64")
    assert_as_exact_as_shap(fast, shap_reference(model, background, images), exact)


def compiled_loops(explainer: Explainer) -> list[str]:
    network = explainer.network
    return [segment.loop.name for segment in [network.input_block, *network.segments] if segment and segment.loop]


@pytest.mark.parametrize("name, loops", [
    ("lab", ["input block", "top"]),
    ("dropout and batch norm", ["input block", "top"]),
    ("two conv blocks", ["input block", "conv block", "top"]),
    # The input block is fused where its conv pads nothing; padded, it runs as a loop of its own.
    ("same padding and batch norm blocks", ["conv block", "conv block", "top"]),
    ("same padding, kernel 2", ["conv block", "top"]),
])
@pytest.mark.parametrize("rule", ["shap", "shapley"])
def test_compiled_loops_equal_the_plain_rules(name, loops, rule):
    model = stack(name, seed=5)
    background, images = random_images(20, (14, 14, 1), 6), random_images(3, (14, 14, 1), 7)
    fused = Explainer(model, softmax_rule=rule, chunk_size=8)
    assert compiled_loops(fused) == loops
    plain = Explainer(model, softmax_rule=rule, chunk_size=8, fuse=False)
    assert compiled_loops(plain) == []
    expected = plain.shap_values(images, background)
    np.testing.assert_allclose(fused.shap_values(images, background), expected, rtol=0,
                               atol=1e-6 * np.abs(expected).max())


def test_read_only_inputs_give_the_same_bytes_without_compiling_again():
    """Ray's object store hands out read-only arrays, and numba compiles a loop per argument type."""
    explainer = Explainer(stack("lab", seed=11), chunk_size=8)
    background, images = random_images(10, (14, 14, 1), 12), random_images(2, (14, 14, 1), 13)
    writable = explainer.shap_values(images, background)
    compiled = {key: len(loop.signatures) for key, loop in kernels_input.POOL_CONV.items()}
    background.flags.writeable = images.flags.writeable = False
    assert explainer.shap_values(images, background).tobytes() == writable.tobytes()
    assert {key: len(loop.signatures) for key, loop in kernels_input.POOL_CONV.items()} == compiled


def test_values_of_an_image_do_not_depend_on_the_images_beside_it_nor_on_threads_of_classes():
    model = stack("two conv blocks", seed=8)
    explainer = Explainer(model, softmax_rule="shapley", chunk_size=7)
    background, images = random_images(15, (14, 14, 1), 9), random_images(5, (14, 14, 1), 10)
    together = explainer.shap_values(images, background)
    apart = np.concatenate([explainer.shap_values(images[:2], background), explainer.shap_values(images[2:], background)])
    assert together.tobytes() == apart.tobytes()
    chosen = explainer.shap_values(images, background, classes=np.array([[3, 0]] * 5))
    np.testing.assert_array_equal(chosen, together[..., [3, 0]])


def brute_force_shapley(zx: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """Return phi[c, i]: Shapley value of logit i for softmax class c, by enumerating every coalition."""
    n = len(zx)
    phi = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                z = zr.copy()
                z[list(coalition)] = zx[list(coalition)]
                without = softmax(z)
                z[i] = zx[i]
                phi[:, i] += weight * (softmax(z) - without)
    return phi


def test_shapley_multipliers_equal_a_brute_force_shapley_computation():
    rng = np.random.default_rng(0)
    zx, zr = rng.normal(0, 2, (3, 5)), rng.normal(0, 2, (4, 5))
    multipliers = shapley_softmax(zx, zr)
    for k, r in itertools.product(range(3), range(4)):
        phi = multipliers[k, r] * (zx[k] - zr[r])  # (classes, logits)
        np.testing.assert_allclose(phi, brute_force_shapley(zx[k], zr[r]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(phi.sum(axis=1), softmax(zx[k]) - softmax(zr[r]), atol=1e-12)  # efficiency


def test_shapley_multipliers_of_chosen_classes_are_the_rows_of_all_classes_bit_for_bit():
    rng = np.random.default_rng(2)
    zx, zr = rng.normal(0, 2, (3, 10)), rng.normal(0, 2, (4, 10))
    classes = np.array([[7], [0], [9]]), np.array([[3, 1], [4, 4], [9, 0]])  # one each; two, a class twice
    everything = shapley_softmax(zx, zr)
    for chosen in classes:
        expected = everything[np.arange(3)[:, np.newaxis], :, chosen].transpose(0, 2, 1, 3)
        np.testing.assert_array_equal(shapley_softmax(zx, zr, chosen), expected)


def test_shapley_multipliers_stay_within_a_quarter_on_ties_and_tiny_changes():
    rng = np.random.default_rng(1)
    zr = rng.normal(0, 3, (6, 10))
    zx = np.concatenate([
        rng.normal(0, 3, (3, 10)),  # random logits
        zr[:3],  # exact ties: every logit unchanged
        zr[3:] + 1e-7 * rng.choice([-1, 1], (3, 10)),  # changes of 1e-7
        np.full((1, 10), 2.0),  # all logits equal
    ])
    multipliers = shapley_softmax(zx, zr)
    assert np.isfinite(multipliers).all()
    assert np.abs(multipliers).max() <= 0.25 + 1e-12
    # Where nothing moves, the multiplier is the softmax's derivative: s_c (delta_ci - s_i).
    s = softmax(zr[0])
    np.testing.assert_allclose(multipliers[3, 0], np.diag(s) - np.outer(s, s), atol=1e-12)


def test_shapley_rule_adds_up_for_a_reference_on_a_near_tie():
    model = stack("lab", seed=11)
    image = random_images(1, (14, 14, 1), 12)
    explainer = Explainer(model, softmax_rule="shapley", chunk_size=4)
    # References a hair away from the image: every logit moves by about 1e-7, where shap's rule divides
    # by that change; one far reference beside them.
    rng = np.random.default_rng(13)
    references = np.concatenate([image + rng.normal(0, 1e-6, (3,) + image.shape[1:]).astype(np.float32),
                                 random_images(1, (14, 14, 1), 14)])
    values = explainer.shap_values(image, references)
    totals = values.reshape(1, -1, 4).astype(np.float64).sum(axis=1)
    expected = explainer.predict(image).astype(np.float64) - explainer.expected_value(references)
    np.testing.assert_allclose(totals, expected, rtol=0, atol=1e-5)


def test_unsupported_layer_is_named():
    """The Explainer's error is deepshap.support's (tests/test_support.py has every case); the way out, a param
    of the pipeline, is fashion_shap.engines' to add (tests/test_engines.py)."""
    inputs = keras.Input(shape=(12, 12, 1))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D(name="squeeze")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match=r"layer 'squeeze' \(GlobalAveragePooling2D\): no rule"):
        Explainer(model)


def test_probability_output_needs_a_softmax_head():
    model = stack("logit head")
    with pytest.raises(UnsupportedModelError, match="softmax"):
        Explainer(model, output="probability")


def test_shapley_multipliers_keep_a_dominant_logits_small_neighbours():
    """A logit far above the others (softmax ~ one-hot): the rest of the sum is tiny beside it."""
    zx = np.array([[36.0, 0.0, -1.0, 2.0]])
    zr = np.array([[0.0, 1.0, 0.5, -2.0]])
    phi = shapley_softmax(zx, zr)[0, 0] * (zx[0] - zr[0])
    np.testing.assert_allclose(phi, brute_force_shapley(zx[0], zr[0]), rtol=0, atol=1e-12)


def test_shap_rule_of_an_image_does_not_depend_on_how_many_share_the_call():
    from deepshap.head import shap_softmax

    rng = np.random.default_rng(2)
    zx, zr = rng.normal(0, 3, (13, 10)), rng.normal(0, 3, (5, 10))
    together = shap_softmax(zx, zr)
    for size in (1, 3, 7):
        apart = np.concatenate([shap_softmax(zx[i : i + size], zr) for i in range(0, 13, size)])
        assert apart.tobytes() == together.tobytes()
