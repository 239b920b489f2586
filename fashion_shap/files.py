"""Writes that never leave a half-written output: each goes to a temporary path, renamed into place
once whole, so a stage that fails or is stopped half-way leaves the last good output or none."""

import csv
import errno
import json
import os
import resource
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
        cause = write_failure(error, path.parent)
        if cause is None:
            raise
        raise PipelineError(f"cannot write {path}: {cause}; free space or fix the limit, then run the stage "
                            f"again") from None
    finally:
        remove(temporary)


def write_failure(error: OSError, directory: Path) -> str | None:
    """Return why a write failed, if a user can mend it; None for any other error (a bug: its traceback helps).

    NumPy reports a short write without an errno ("N requested and M written"): then the disk's free
    space and the process's file-size limit tell the cause.
    """
    if error.errno in WRITE_ERRORS:
        return os.strerror(error.errno)
    if error.errno is not None or "written" not in str(error):
        return None
    if shutil.disk_usage(directory).free < 1 << 20:
        return os.strerror(errno.ENOSPC)
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return os.strerror(errno.EFBIG)
    return f"the write was cut short ({error})"


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


def update_json(path: Path, values: dict) -> None:
    """Write values into the JSON object at path, keeping its other keys (a file several stages write to)."""
    current = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    save_json(path, {**current, **values})


def save_csv(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts with the same keys, the header) as CSV: floats (NumPy's float32 too) to 6 significant digits."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(rows[0])
        writer.writerows([f"{value:.6g}" if isinstance(value, (float, np.floating)) else value
                          for value in row.values()] for row in rows)
