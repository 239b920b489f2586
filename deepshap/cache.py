"""Where numba keeps the engine's compiled loops: one folder per user, shared by every copy of the code.

numba (0.68) checks a cached loop against a hash of its source file's content, but by default keeps
it beside the source (`deepshap/__pycache__`), or under NUMBA_CACHE_DIR in a folder named after the
source's full path. A fresh clone, or each `dvc exp run` workspace (a new temporary folder), then
compiled every loop again. Named after the package instead, the cache serves any folder that holds
the same code; a changed source only recompiles, as before.

numba stamps a loop with its own file alone, but its machine code holds the compiled functions it
calls from other modules (deepshap.kernels' add_rows, inlined in deepshap.kernels_top's loop): a
changed kernels.py left the top's old code in use. Stamped with every source of the package, any
change compiles every loop again, once.
"""

import functools
import hashlib
import os
from pathlib import Path

from numba.core import config
from numba.core.caching import UserWideCacheLocator


class SharedCacheLocator(UserWideCacheLocator):
    """numba's user-wide cache (NUMBA_CACHE_DIR if set, else ~/.cache/numba), in the folder `deepshap`."""

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._cache_path = os.path.join(config.CACHE_DIR or os.path.dirname(self._cache_path), "deepshap")

    def get_source_stamp(self) -> tuple:
        return super().get_source_stamp(), package_stamp(Path(__file__).parent)


@functools.cache
def package_stamp(folder: Path) -> str:
    """Return a hash of the Python sources in folder, in name order (read once per process)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def use_shared_cache() -> None:
    """Make numba find the loops compiled with cache=True after this call through SharedCacheLocator,
    unless NUMBA_CACHE_LOCATOR_CLASSES names other locators. Where that folder cannot be written,
    numba's default (beside the source) follows.

    Set in the environment too: numba reloads its config from there before it compiles.
    """
    config.CACHE_LOCATOR_CLASSES = os.environ.setdefault(
        "NUMBA_CACHE_LOCATOR_CLASSES", f"{__name__}.{SharedCacheLocator.__name__},InTreeCacheLocator")


# The package's one import-time setting, made where the first compiled loop is defined (deepshap.head
# imports this module before defining it).
use_shared_cache()
