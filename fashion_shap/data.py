"""The data: IDX files (gzipped), the preprocessed splits, the class names, and the test predictions evaluate records."""

import csv
import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from fashion_shap.params import PipelineError

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
NUM_CLASSES = len(CLASS_NAMES)

# IDX type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur in (Fashion-)MNIST.
IDX_UBYTE = 0x08


def read_gzip(path: Path, origin: str | None = None, fix: str = "fetch it again") -> bytes:
    """Return the decompressed bytes of a .gz file, or fail in one line naming origin (default: path) and fix."""
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    # zlib.error: a deflate stream damaged in the middle, which gzip does not wrap in an OSError.
    except (OSError, EOFError, zlib.error) as error:
        raise PipelineError(f"{origin or path} is not a readable gzip file ({error}); {fix}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Return the array stored in IDX bytes: a magic number, big-endian dimensions, then the data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise PipelineError(f"{source} is not an IDX file of unsigned bytes; fetch it again")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise PipelineError(f"{source} is truncated in its IDX header; fetch it again")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(data) != header_size + size:
        raise PipelineError(
            f"{source} holds {len(data) - header_size} bytes of data, its header says {size}; fetch it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Return the array in a gzipped IDX file."""
    return parse_idx(read_gzip(path), str(path))


def first_of_each_class(images: np.ndarray, labels: np.ndarray, count: int = 1) -> np.ndarray:
    """Return the first count images of each class, in class order: shape (classes * count, *image shape)."""
    indices = []
    for label in range(NUM_CLASSES):
        (found,) = np.nonzero(labels == label)
        if len(found) < count:
            raise PipelineError(f"the data has {len(found)} images of class {label} ({CLASS_NAMES[label]}), "
                                f"fewer than the {count} asked for")
        indices.extend(found[:count])
    return images[indices]


def load_split(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) of a split written by the preprocess stage."""
    directory = Path(directory)
    return np.load(directory / "x.npy"), np.load(directory / "y.npy")


def prediction_rows(labels: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Return the evaluate stage's record of its predictions, a row of (actual, predicted) class names per test image
    in the split's order: `dvc plots` draws it as a confusion matrix, and the mistakes stage reads it."""
    return [{"actual": CLASS_NAMES[a], "predicted": CLASS_NAMES[p]} for a, p in zip(labels, predicted)]


def load_predicted(path: Path, count: int) -> np.ndarray:
    """Return each test image's predicted class, (count,) int64, from a CSV of prediction_rows; fail in one line
    unless it holds count rows of known class names."""
    try:
        with open(path, newline="") as file:
            predicted = [CLASS_NAMES.index(row["predicted"]) for row in csv.DictReader(file)]
    except (KeyError, ValueError, csv.Error):
        predicted = None
    if predicted is None or len(predicted) != count:
        raise PipelineError(f"{path} is not the evaluate stage's predictions of the {count} test images; run the "
                            f"evaluate stage again")
    return np.array(predicted, dtype=np.int64)
