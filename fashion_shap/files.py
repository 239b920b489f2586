"""Writes that never leave a half-written output: each goes to a temporary path, renamed into place
once whole, so a stage that fails or is stopped half-way leaves the last good output or none."""

import csv
import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fashion_shap.params import PipelineError

# Write failures a user can mend (free space, raise a limit, fix permissions), reported in one line.
WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to (a file, or a directory the block makes); move it to path only
    if the block succeeds.

    The temporary name keeps path's suffix (Keras and NumPy insist on theirs). A write that fails for
    want of space, a file-size limit or permission becomes a one-line PipelineError naming path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp.{path.name}")
    remove(temporary)
    try:
        yield temporary
        remove(path)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        raise PipelineError(f"cannot write {path}: {os.strerror(error.errno)}; free space or fix the "
                            f"limit, then run the stage again") from None
    finally:
        remove(temporary)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        np.save(temporary, array)


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write each array as directory/<name>.npy; the directory appears whole or not at all."""
    with atomic_path(directory) as temporary:
        temporary.mkdir()
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array)


def save_json(path: Path, data: dict) -> None:
    # Sorted keys and a trailing newline: the same data always gives the same bytes.
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_csv(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts with the same keys, the header) as CSV: floats to 6 significant digits."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(rows[0])
        writer.writerows([f"{value:.6g}" if isinstance(value, float) else value for value in row.values()]
                         for row in rows)
