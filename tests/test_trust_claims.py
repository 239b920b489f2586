"""trust.claims: in how many backgrounds each of the lab's readings held."""

import pytest

from fashion_shap.trust.claims import claims_summary


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
