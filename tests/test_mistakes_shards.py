"""mistakes.shards: the mistakes explained shard by shard give the bytes of one shard, for either engine."""

import numpy as np
import pytest
from conftest import assert_as_exact_as_shap
from mistakes_data import IMAGES, SETTINGS, inputs, weights

from deepshap import shap_reference
from fashion_shap.engines import chosen_classes
from fashion_shap.mistakes.shards import explain_in_process


def test_shards_of_any_size_give_the_same_bytes_and_the_values_add_up(mistaken, reference):
    model, background, images, classes = inputs(mistaken)
    assert len(images) == IMAGES  # every relabelled image is a mistake
    for shard_size in (5, 7):
        np.testing.assert_array_equal(explain_in_process(weights(mistaken), background, images, classes, SETTINGS,
                                                         shard_size),
                                      reference)
    # Completeness, class by class: the true class's values first, then the predicted one's.
    probabilities = model.predict(images, verbose=0).astype(np.float64)
    expected = model.predict(background, verbose=0).astype(np.float64).mean(axis=0)
    rows = np.arange(len(images))[:, np.newaxis]
    totals = reference.astype(np.float64).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(totals, probabilities[rows, classes] - expected[classes], atol=1e-5)
    assert np.abs(reference).max() > 1e-3


@pytest.mark.slow
def test_shap_engine_gives_the_fast_engines_values_for_the_two_classes(mistaken):
    model, background, images, classes = inputs(mistaken, background_size=5)
    images, classes = images[:3], classes[:3]
    settings, file = dict(SETTINGS, chunk_size=5), weights(mistaken)
    fast = explain_in_process(file, background, images, classes, settings, shard_size=3)
    shap = explain_in_process(file, background, images, classes, dict(settings, engine="shap"), shard_size=2)
    every_class = shap_reference(model, background, images, dtype="float64")  # shap's softmax rule: see conftest
    assert_as_exact_as_shap(fast, shap, chosen_classes(every_class, classes))
