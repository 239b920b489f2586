"""Fetch the four original Fashion-MNIST IDX files, verified by the SHA-256 of their content.

Offline first: the files are taken from the first of the source's search_dirs that holds them
(by default where Debian's dataset-fashion-mnist package installs them, then Keras' dataset
cache), and downloaded from its url only when no directory has them.

Reads: the data's source, a YAML file (search_dirs, url, and the SHA-256 of each file's content).
Writes: the four .gz files, byte for byte as found, into the output directory.
"""

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from fashion_shap.data import read_gzip, sha256
from fashion_shap.files import atomic_path
from fashion_shap.params import PipelineError, parse_paths, read_params, run

DOWNLOAD_TIMEOUT = 60  # seconds without an answer before a download is given up
OFFLINE_HINT = (
    "to work offline, install the data with 'apt-get install dataset-fashion-mnist' "
    "or copy the four .gz files into one of the search_dirs of data/fashion-mnist.yaml"
)


def find_local(name: str, search_dirs: list[str]) -> Path | None:
    """Return the first search_dirs/name that exists."""
    for directory in search_dirs:
        candidate = Path(directory).expanduser() / name
        if candidate.is_file():
            return candidate
    return None


def download(url: str, destination: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(destination, "wb") as file:
            shutil.copyfileobj(response, file)
    except (urllib.error.URLError, OSError) as error:
        raise PipelineError(f"no local copy, and downloading {url} failed ({error}); {OFFLINE_HINT}") from None


def verify(path: Path, origin: str, expected: str) -> None:
    """Fail unless the decompressed content of path, a copy of origin, has the expected SHA-256."""
    # Name origin, not path: path is the temporary copy, gone once the stage has failed.
    actual = sha256(read_gzip(path, origin, f"replace it with the original file ({OFFLINE_HINT})"))
    if actual != expected:
        raise PipelineError(
            f"{origin} has the wrong content: SHA-256 {actual}, expected {expected}; "
            f"replace it with the original file ({OFFLINE_HINT})"
        )


def fetch(name: str, expected: str, search_dirs: list[str], url: str, output_dir: Path) -> str:
    """Place the verified file output_dir/name; return where it came from."""
    local = find_local(name, search_dirs)
    with atomic_path(output_dir / name) as temporary:
        if local is not None:
            origin = str(local)
            shutil.copyfile(local, temporary)
        else:
            origin = url.rstrip("/") + "/" + name
            download(origin, temporary)
        verify(temporary, origin, expected)
    return origin


def main(argv: list[str] | None = None) -> None:
    source_path, output_dir = parse_paths("fetch", __doc__, ["source", "raw_dir"], argv)
    source = read_params(None, {"search_dirs": list, "url": str, "sha256": dict}, source_path)

    output_dir.mkdir(parents=True, exist_ok=True)
    for base_name, expected in source["sha256"].items():
        name = f"{base_name}.gz"
        origin = fetch(name, expected, source["search_dirs"], source["url"], output_dir)
        print(f"fetch: {name} from {origin}, SHA-256 verified")


if __name__ == "__main__":
    run(main)
