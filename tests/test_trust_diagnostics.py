"""trust.diagnostics: how few references carry the maps, per rule."""

import numpy as np
import pytest
from trust_models import random_images, small_model

from fashion_shap.trust.diagnostics import concentration, diagnostics, reference_norms
from fashion_shap.trust.rules import RULES, explain_all, rule_explainers


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
