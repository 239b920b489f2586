"""The mistakes tests' data: a test split relabelled so that every image is a mistake (fixtures in conftest.py)."""

import shutil
from pathlib import Path

import numpy as np
import yaml
from conftest import write_params

from fashion_shap.mistakes.concentration import find_mistakes
from fashion_shap.mistakes.shards import model_file
from fashion_shap.model import load_model

ARGS = ["models/model.weights.h5", "data/background.npy", "data/test", "plots/confusion.csv", "out/mistakes",
        "out/mistakes.json", "out/report.json", "out/mistakes.png"]
SETTINGS = {"engine": "fast", "output": "probability", "softmax_rule": "shap", "chunk_size": 10}
IMAGES = 16  # test images, all mistakes once relabelled
PARAMS = {"background_size": 10, "ray_address": "", "shard_size": 4, "chunk_size": 10, "top_pairs": 2}


def labels_one_or_two_off(predicted: np.ndarray) -> np.ndarray:
    """Return labels that make every prediction wrong: prediction + 1 for two images in three, + 2 for the third."""
    return (predicted + 1 + (np.arange(len(predicted)) % 3 == 2)) % 10


def copy_with(source: Path, target: Path, **mistakes_params) -> Path:
    """Copy a stage directory (its inputs and params), changing some mistakes params."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("out"))
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["mistakes"].update(mistakes_params)
    write_params(target, params)
    return target


def weights(directory: Path) -> tuple[str, bytes]:
    """Return (path, bytes) of a stage directory's weights file, as the stage passes them on."""
    return model_file(directory / "models/model.weights.h5")


def inputs(directory: Path, background_size: int = PARAMS["background_size"]) -> tuple:
    """Return (model, background, images, classes) of a stage directory: the mistakes of the model's own predictions."""
    model = load_model(directory / "models/model.weights.h5")
    x_test, y_test = np.load(directory / "data/test/x.npy"), np.load(directory / "data/test/y.npy")
    indices, classes = find_mistakes(model.predict(x_test, verbose=0).argmax(axis=1), y_test)
    return model, np.load(directory / "data/background.npy")[:background_size], x_test[indices], classes
