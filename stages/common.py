"""Code the stages share: params, errors, IDX files, atomic writes and the class names."""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

PARAMS_FILE = "params.yaml"

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
NUM_CLASSES = len(CLASS_NAMES)

# IDX type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur in (Fashion-)MNIST.
IDX_UBYTE = 0x08


class PipelineError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(), turning a PipelineError into a one-line message and exit code 1."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as error:  # an input another stage makes: dvc repro runs that stage first
        print(f"error: {error.filename}: no such file; `dvc repro` makes the pipeline's files", file=sys.stderr)
        sys.exit(1)


def parse_paths(stage: str, doc: str, names: list[str], argv: list[str] | None = None) -> list[Path]:
    """Return a stage's paths from its command line, in the order of names.

    A wrong count prints the usage line (`python -m stages.<stage> NAME ...`) and exits with code 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc.strip().splitlines()[0])
    for name in names:
        parser.add_argument(name, type=Path, metavar=name.upper())
    arguments = parser.parse_args(argv)
    return [getattr(arguments, name) for name in names]


def read_params(section: str, types: dict[str, type]) -> dict:
    """Return the keys of one params.yaml section, checked against their expected types."""
    try:
        with open(PARAMS_FILE) as file:
            params = yaml.safe_load(file) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PipelineError(f"cannot read {PARAMS_FILE}: {error}") from None
    values = params.get(section)
    if not isinstance(values, dict):
        raise PipelineError(f"{PARAMS_FILE} has no section '{section}'; add it (see README)")
    checked = {}
    for key, expected in types.items():
        if key not in values:
            raise PipelineError(f"{PARAMS_FILE} is missing the key {section}.{key}; add it (see README)")
        checked[key] = check_type(f"{section}.{key}", values[key], expected)
    return checked


def check_type(name: str, value: object, expected: type) -> object:
    """Return value if it has the expected type; an int is accepted where a float is expected."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, but "epochs: true" is a mistake, not the number 1.
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    hint = " (write floats like 1.0e-3: YAML reads 1e-3 as a string)" if expected is float else ""
    raise PipelineError(
        f"{PARAMS_FILE}: {name} must be {expected.__name__}, got {value!r}{hint}"
    )


def require_positive(name: str, value: int | float) -> None:
    """Fail with a clear message unless value > 0."""
    if value <= 0:
        raise PipelineError(f"{PARAMS_FILE}: {name} must be positive, got {value}")


def read_gzip(path: Path) -> bytes:
    """Return the decompressed bytes of a .gz file."""
    try:
        with gzip.open(path, "rb") as file:
            return file.read()
    except (OSError, EOFError, zlib.error) as error:  # zlib.error: a corrupt stream inside a valid header
        raise PipelineError(f"{path} is not a readable gzip file ({error}); fetch it again") from None


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


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to; move it to path only if the block succeeds.

    The temporary name keeps path's suffix (Keras and NumPy insist on theirs), so a stage
    that fails half-way leaves no half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp.{path.name}")
    remove(temporary)
    try:
        yield temporary
        remove(path)
        os.replace(temporary, path)
    finally:
        remove(temporary)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        np.save(temporary, array)


def save_json(path: Path, data: dict) -> None:
    # Sorted keys and a trailing newline: the same data always gives the same bytes.
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG without metadata that could vary between runs."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", metadata={"Software": None})


def is_terminal() -> bool:
    """True when progress bars are for a person, not a CI log."""
    return sys.stderr.isatty()
