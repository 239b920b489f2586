"""cache: the compiled loops are stamped with every source of the package, not only their own file's."""

import shutil
from pathlib import Path

import deepshap
from deepshap.cache import SharedCacheLocator, package_stamp


def double(x):  # any function numba would compile
    return 2 * x


def test_a_change_in_any_source_of_the_package_changes_the_stamp(tmp_path):
    copy = tmp_path / "deepshap"
    shutil.copytree(Path(deepshap.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = package_stamp(copy)
    assert package_stamp.__wrapped__(copy) == before  # the same sources, the same stamp
    kernels = copy / "kernels.py"  # a module whose loops others inline, while their own files stay as they were
    kernels.write_text(kernels.read_text() + "\n# changed\n")
    assert package_stamp.__wrapped__(copy) != before


def test_a_loop_is_stamped_with_its_own_file_and_the_package():
    locator = SharedCacheLocator(double, __file__)
    own, package = locator.get_source_stamp()
    assert package == package_stamp(Path(deepshap.__file__).parent)
    assert own == super(SharedCacheLocator, locator).get_source_stamp()
