"""readings: the lab's three readings as claims, on maps built to make each one hold and fail."""

import numpy as np

from fashion_shap.data import NUM_CLASSES
from fashion_shap.readings import (
    COAT,
    PULLOVER,
    T_SHIRT,
    coat_claim,
    diagonal_claim,
    lab_claims,
    sleeve_pixels,
    sleeves_claim,
)

LABELS = np.arange(NUM_CLASSES)  # the lab's ten images, one per class in class order
SHIRT = 6


def diagonal_maps() -> np.ndarray:
    """Return maps (10, 28, 28, 1, 10) where each image's own class has positive mass 1, every other class 0.5."""
    values = np.zeros((NUM_CLASSES, 28, 28, 1, NUM_CLASSES), dtype=np.float32)
    values[:, 0, 0, 0, :] = 0.5
    values[LABELS, 1, 1, 0, LABELS] = 1.0
    values[LABELS, 2, 2, 0, LABELS] = -5.0  # negative values do not count
    return values


def coat_probabilities() -> np.ndarray:
    """Return probabilities where the coat is Coat 0.6, Pullover 0.3, Shirt 0.1."""
    probabilities = np.full((NUM_CLASSES, NUM_CLASSES), 0.0)
    probabilities[LABELS, LABELS] = 1.0
    probabilities[COAT] = 0.0
    probabilities[COAT, [COAT, PULLOVER, SHIRT]] = [0.6, 0.3, 0.1]
    return probabilities


def test_diagonal_holds_when_every_image_reads_as_its_class_and_fails_for_one_that_does_not():
    values = diagonal_maps()
    assert diagonal_claim(values, LABELS) == {"holds": True, "share": 1.0}
    values[3, 5, 5, 0, 7] = 2.0  # the Dress now has more positive mass for Sneaker
    assert diagonal_claim(values, LABELS) == {"holds": False, "share": 0.9}


def test_coat_holds_for_its_three_most_probable_classes_in_any_order():
    values = np.zeros((NUM_CLASSES, 28, 28, 1, NUM_CLASSES), dtype=np.float32)
    values[COAT, 0, 0, 0, [SHIRT, COAT, PULLOVER]] = [0.9, 0.5, 0.2]  # Shirt ahead of Coat: order does not matter
    values[COAT, 1, 1, 0, 8] = -3.0  # Bag pushed away
    assert coat_claim(values, coat_probabilities(), LABELS) == {"holds": True, "shared_top3": 3}
    values[COAT, 2, 2, 0, 8] = 4.0  # Bag's positive mass now beats Pullover's
    assert coat_claim(values, coat_probabilities(), LABELS) == {"holds": False, "shared_top3": 2}


def test_sleeve_pixels_are_blank_in_the_t_shirt_and_filled_in_the_mean_pullover():
    t_shirt = np.array([[0.0, 0.0, 0.5], [0.05, 0.2, 0.0]])[..., np.newaxis]
    pullover = np.array([[0.9, 0.2, 0.9], [0.4, 0.9, 0.3]])[..., np.newaxis]
    expected = np.array([[True, False, False], [True, False, False]])[..., np.newaxis]
    np.testing.assert_array_equal(sleeve_pixels(t_shirt, pullover, 0.1, 0.3), expected)


def sleeve_maps(t_shirt_value: float, pullover_value: float, pixels: np.ndarray) -> np.ndarray:
    """Return maps where the T-shirt image's sleeve pixels hold these values for T-shirt and Pullover."""
    values = np.zeros((NUM_CLASSES, 28, 28, 1, NUM_CLASSES), dtype=np.float32)
    values[T_SHIRT, ..., T_SHIRT][pixels] = t_shirt_value
    values[T_SHIRT, ..., PULLOVER][pixels] = pullover_value
    values[T_SHIRT, ..., T_SHIRT][~pixels] = -1.0  # outside the sleeves: not read
    values[PULLOVER, ..., PULLOVER][pixels] = 1.0  # another image: not read
    return values


def test_sleeves_hold_when_the_sleeves_push_towards_t_shirt_and_away_from_pullover():
    pixels = np.zeros((28, 28, 1), dtype=bool)
    pixels[10:14, 2:5] = True  # 12 pixels
    holding = sleeves_claim(sleeve_maps(0.01, -0.02, pixels), LABELS, pixels)
    assert holding["holds"] and np.isclose(holding["t_shirt_sum"], 0.12) and np.isclose(holding["pullover_sum"], -0.24)
    assert not sleeves_claim(sleeve_maps(0.01, 0.02, pixels), LABELS, pixels)["holds"]  # towards Pullover too
    assert not sleeves_claim(sleeve_maps(-0.01, -0.02, pixels), LABELS, pixels)["holds"]  # away from T-shirt


def test_lab_claims_reads_all_three():
    pixels = np.zeros((28, 28, 1), dtype=bool)
    pixels[0, 27] = True
    claims = lab_claims(diagonal_maps(), coat_probabilities(), LABELS, pixels)
    assert set(claims) == {"diagonal", "coat", "sleeves"}
    assert claims["diagonal"]["holds"] and not claims["sleeves"]["holds"]  # the sleeve pixel holds 0 for both
