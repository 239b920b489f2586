"""Draw the SHAP background: a seeded random sample of training images, without replacement.

Reads: the train directory written by preprocess.
Writes: the background images, (size, 28, 28, 1) float32, as .npy.
"""

import numpy as np

from fashion_shap.data import load_split
from fashion_shap.files import save_npy
from fashion_shap.params import parse_paths, read_params, require_at_most, require_positive, run


def sample_background(images: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Return size images drawn at random without replacement, in the order drawn."""
    require_at_most("sample_background.size", size, len(images), "the training set")
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), size=size, replace=False)]


def main(argv: list[str] | None = None) -> None:
    params = read_params("sample_background", {"seed": int, "size": int})
    require_positive("sample_background.size", params["size"])
    train_dir, background_path = parse_paths("sample_background", __doc__, ["train_dir", "background"], argv)

    x_train, _ = load_split(train_dir)
    background = sample_background(x_train, params["size"], params["seed"])
    save_npy(background_path, background)
    print(f"sample_background: {background.shape} from {len(x_train)} training images")


if __name__ == "__main__":
    run(main)
