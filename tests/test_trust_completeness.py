"""trust.completeness: every rule's values add up to f(x) - E f(background); a broken sum is measured."""

from trust_models import random_images, small_model

from fashion_shap.trust.completeness import completeness
from fashion_shap.trust.rules import RULES, explain_all, rule_explainers


def test_every_rule_is_complete_and_a_shifted_value_shows_as_its_error():
    model, images, background = small_model(), random_images(3, 0), random_images(8, 1)
    explainers = rule_explainers(model, chunk_size=4)
    values = explain_all(explainers, background, images)
    measured = completeness(explainers, values, images, background)
    for name in RULES:
        assert measured[name]["max_additivity_error"] < 1e-5
        assert measured[name]["mean_additivity_error"] <= measured[name]["max_additivity_error"]
    values["logit"][1, 0, 0, 0, 2] += 0.5  # one image's sum for one class off by 0.5
    shifted = completeness(explainers, values, images, background)["logit"]
    assert abs(shifted["max_additivity_error"] - 0.5) < 1e-5
