"""trust.randomization: re-initialised layers make the maps stop resembling the trained model's."""

import numpy as np
import pytest
from trust_models import random_images, small_model

from fashion_shap.trust.randomization import lab_rule_maps, randomized_values, rank_correlation
from fashion_shap.trust.rules import explain_all, rule_explainers


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
