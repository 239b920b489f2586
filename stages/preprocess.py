"""Turn the raw IDX files into model-ready arrays.

Reads: the four .gz IDX files written by fetch.
Writes: a train and a test directory, each with x.npy (N, 28, 28, 1) float32 pixels in [0, 1]
and y.npy (N,) uint8 labels 0-9.
"""

from pathlib import Path

import numpy as np

from fashion_shap.data import NUM_CLASSES, read_idx
from fashion_shap.files import save_npy
from fashion_shap.params import PipelineError, parse_paths, run

PIXEL_MAX = 255.0  # IDX pixels are unsigned bytes


def load_images_and_labels(raw_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of one split, e.g. prefix 'train' or 't10k'; checked for consistency."""
    images = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1:
        raise PipelineError(f"{prefix}: expected images (N, rows, columns) and labels (N,), got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise PipelineError(f"{prefix}: {len(images)} images but {len(labels)} labels")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise PipelineError(f"{prefix}: label {labels.max()} is outside 0..{NUM_CLASSES - 1}")
    return images, labels


def scale(images: np.ndarray) -> np.ndarray:
    """Return (N, rows, columns, 1) float32 pixels in [0, 1]: the model's input format."""
    return (images.astype(np.float32) / PIXEL_MAX)[..., np.newaxis]


def main(argv: list[str] | None = None) -> None:
    raw_dir, train_dir, test_dir = parse_paths("preprocess", __doc__, ["raw_dir", "train_dir", "test_dir"], argv)

    for prefix, output_dir in (("train", train_dir), ("t10k", test_dir)):
        images, labels = load_images_and_labels(raw_dir, prefix)
        x = scale(images)
        save_npy(output_dir / "x.npy", x)
        save_npy(output_dir / "y.npy", labels)
        print(f"preprocess: {prefix} x {x.shape} {x.dtype}, y {labels.shape} -> {output_dir}")


if __name__ == "__main__":
    run(main)
