"""Tiny synthetic Fashion-MNIST files and throwaway git + DVC projects for the tests.

Every test runs the real code (real TensorFlow, shap and dvc) on data made here: a few hundred
28x28 images whose class is drawn into them, so a model learns something in one epoch.

The quick lane (`pytest -m "not slow"`) calls each stage's main() in this process, so TensorFlow,
shap and numba load once; tests marked slow start `python -m stages.<name>` or the real `dvc`.
"""

import os

# One thread per process, set before NumPy, numba or TensorFlow load, and inherited by every process
# a test starts: pytest-xdist already runs a worker per core, and with a thread pool per process
# (OpenBLAS, numba, TensorFlow) the cores went to threads waiting for each other (measured: the whole
# suite 3 min 53 s -> 3 min 12 s). tests/test_determinism.py sets the thread counts it compares.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                  "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_variable, "1")

import contextlib
import fcntl
import gzip
import hashlib
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from configobj import ConfigObj

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SIZE = 200
TEST_SIZE = 60
BACKGROUND_SIZE = 20
SOURCE = "data/fashion-mnist.yaml"  # where the fetch stage reads the data's source, as dvc.yaml says

# Quiet TensorFlow in the stages the tests start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No usage report from the dvc the tests start: each dvc command otherwise starts a `dvc daemon analytics`
# process that tries the network (measured: about 0.45 s of CPU time each, over 100 dvc commands a run).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def synthetic_split(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (images (size, 28, 28) uint8, labels (size,) uint8): class k lights row band k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(size, dtype=np.uint8) % 10
    images = rng.integers(0, 60, size=(size, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        image[2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """Return array (uint8) in the IDX format: magic 0x0000 0x08 ndim, big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_raw_files(directory: Path) -> dict[str, str]:
    """Write the four synthetic .gz IDX files; return the SHA-256 of each one's content, by base name."""
    directory.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for prefix, size, seed in (("train", TRAIN_SIZE, 0), ("t10k", TEST_SIZE, 1)):
        images, labels = synthetic_split(size, seed)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}"
            content = idx_bytes(array)
            # mtime=0: the same content always gives the same .gz bytes.
            with open(directory / f"{name}.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as file:
                file.write(content)
            hashes[name] = hashlib.sha256(content).hexdigest()
    return hashes


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests of the queued experiments on one pytest-xdist worker (they share them), and the
    tests that start Ray on one worker (two Ray clusters at once would fight for the cores): those that
    take a Ray of their own, the ray_root or two_node_cluster fixture of tests/test_mistakes.py. The other
    mistakes tests run anywhere: in a group, they only lengthened the one worker's share."""
    for item in items:
        if "queued" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("queue"))
        elif {"ray_root", "two_node_cluster"} & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("ray"))


def write_source(directory: Path, search_dir: Path, hashes: dict[str, str], url: str = "http://127.0.0.1:9/") -> None:
    """Write the data's source (SOURCE) pointed at the synthetic files; by default at a url where nothing
    listens, so that no test downloads by accident."""
    source = {"search_dirs": [str(search_dir)], "url": url, "sha256": hashes}
    (directory / SOURCE).parent.mkdir(parents=True, exist_ok=True)
    (directory / SOURCE).write_text(yaml.safe_dump(source, sort_keys=False))


def tiny_params() -> dict:
    """Return params.yaml's content, shrunk for speed."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    params["sample_background"]["size"] = BACKGROUND_SIZE
    params["trust"].update(
        images_per_class=1, convergence_sizes=[5], diagnostics_size=5, deletion_steps=7, random_orders=2,
        randomization_background=10, readings_backgrounds=2, readings_size=10, chunk_size=10,
    )
    # Every mistake in one shard: explained in the stage's process, no Ray to start (tests/test_mistakes.py
    # runs the stage on Ray).
    # background_size: half the background, so that an experiment may halve sample_background.size.
    params["mistakes"].update(background_size=BACKGROUND_SIZE // 2, shard_size=10_000, chunk_size=10)
    return params


def write_params(directory: Path, params: dict) -> None:
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, returning its output; on an unexpected failure show what it printed."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_stage(stage: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run one stage as dvc.yaml does, python -m stages.<stage>, in cwd (where its params.yaml is)."""
    return run([sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd, check=check)


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(["dvc", *args], cwd=cwd, check=check)


def dvc_status(directory: Path) -> dict[str, list[dict]]:
    """Return what `dvc status --json` prints in directory, {stage: [{"changed deps": {...}}, ...]} for each stage
    invalidated, from the call the command makes, in this process (measured: 0.3-0.6 s a call, where the command's own
    process took 2.3 s of CPU; a suite run asks 17 times)."""
    from dvc.repo import Repo  # here, so that only the tests that ask load dvc

    # In the directory, as the command runs: dvc names the stages of another directory's dvc.yaml by their path.
    with contextlib.chdir(directory), Repo() as repo:
        return repo.status()


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(["git", *args], cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Assert that a stage run as a command failed with exit code 1 and one line "error: ..." holding fragments."""
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ")
    for fragment in fragments:
        assert fragment in error


# Under shap's softmax rule, how far one float32 run's values may lie from float64's by its rounding alone, as a
# share of the largest value (assert_as_exact_as_shap): under 1e-3, so that a 1e-3 error in a rule still fails (6 of
# the 8 stacks of tests/test_deepshap.py, measured).
FLOAT32_SCATTER = 5e-4


def assert_as_exact_as_shap(values: np.ndarray, shap_values: np.ndarray, exact: np.ndarray) -> None:
    """Assert that values lie no further from exact (shap's rules in float64) than twice shap's own float32 values,
    or than FLOAT32_SCATTER of the largest value.

    Under shap's softmax rule a value divides by a logit's change, which takes the float32 rounding of the forward
    pass with it: shap's own values lay up to 6e-3 of the largest from float64's (measured, the tests' stacks), and
    TensorFlow's float32 forward rounds an image by the images beside it (oneDNN, on any CPU), so no other float32 run
    can give shap's bits. The engine rounds each layer's float64 output once, but its batch norm and pooling are
    float32 as shap's are: its distance is of the size of shap's, not always below twice it. Twice covers the
    engine's where both round the same float32 layers (it came within 4 % of shap's, either side, on an AVX2 Zen 2);
    the floor, where shap's one float32 run happens to come closer: on the dropout and batch norm stack the engine
    lay 2.9e-4 of the largest from float64 on that Zen 2 and on an AVX-512 Intel Xeon, shap 2.8e-4 and 6.8e-5.
    """
    largest = np.abs(exact).max()
    assert largest > 1e-3  # the comparison is not between zeros
    shap_error = np.abs(shap_values - exact).max()
    assert np.abs(values - exact).max() <= max(2 * shap_error, FLOAT32_SCATTER * largest)


def set_param(directory: Path, section: str, key: str, value) -> None:
    """Change one value of directory's params.yaml."""
    params = yaml.safe_load((directory / "params.yaml").read_text())
    params[section][key] = value
    write_params(directory, params)


def pipeline_stages(directory: Path) -> dict[str, dict]:
    """Return the stages of directory's dvc.yaml, by name."""
    return yaml.safe_load((directory / "dvc.yaml").read_text())["stages"]


def declared_outs(stage: dict) -> list[str]:
    """Return the paths a dvc.yaml stage declares as outs (an out is a path, or {path: options})."""
    return [out if isinstance(out, str) else next(iter(out)) for out in stage.get("outs", [])]


def lock_hashes(directory: Path) -> dict[str, str]:
    """Return {out path: md5} of every stage output recorded in directory's dvc.lock."""
    lock = yaml.safe_load((directory / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def stages_run(output: str) -> list[str]:
    """Return the stages a `dvc repro` or `dvc exp run` executed, from its "Running stage" lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="session")
def raw_files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The directory of the four synthetic .gz files, and their content hashes."""
    directory = tmp_path_factory.mktemp("raw")
    return directory, write_raw_files(directory)


@pytest.fixture
def workdir(tmp_path, raw_files) -> Path:
    """A directory with tiny params.yaml, where single stages run."""
    write_params(tmp_path, tiny_params())
    write_source(tmp_path, *raw_files)
    return tmp_path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, raw_files) -> Path:
    """A directory where fetch, preprocess, train and sample_background ran once on the tiny data.

    They run in this process, with dvc.yaml's paths: the slow tests prove the command lines.
    """
    # Imported here, so that only the tests that need a model load TensorFlow.
    from stages import fetch, preprocess, sample_background, train

    directory = tmp_path_factory.mktemp("prepared")
    write_params(directory, tiny_params())
    write_source(directory, *raw_files)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(directory)  # where the stages read params.yaml
        fetch.main([SOURCE, "data/raw"])
        preprocess.main(["data/raw", "data/train", "data/test"])
        train.main(["data/train", "data/test", "models/model.weights.h5", "metrics/train"])
        sample_background.main(["data/train", "data/background.npy"])
    return directory


@pytest.fixture(scope="session")
def explained(prepared) -> Path:
    """The prepared directory after the explain stage ran there, in this process, with tiny params."""
    from stages import explain

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(prepared)
        explain.main([
            "models/model.weights.h5", "data/background.npy", "data/test", "data/explanations",
            "metrics/explain.json", "reports/explain.json", "metrics/timing.json",
        ])
    return prepared


def init_project(directory: Path, raw_files: tuple[Path, dict[str, str]]) -> Path:
    """Make directory a git + DVC project holding this pipeline with tiny params, committed."""
    directory.mkdir(parents=True, exist_ok=True)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in sorted({name.split(".")[0] for name in packages}):  # subpackages travel with their parent
        shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", directory / "dvc.yaml")
    write_params(directory, tiny_params())
    write_source(directory, *raw_files)
    git("init", "-q", "-b", "main", cwd=directory)
    git("config", "user.email", "tests@example.com", cwd=directory)
    git("config", "user.name", "tests", cwd=directory)
    dvc("init", "-q", cwd=directory)
    # After dvc init, which writes a .dvcignore of its own: what this repository keeps out of git
    # and out of DVC's hashes (e.g. numba's compiled cache beside the code) stays out here too.
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, directory / name)
    dvc("config", "core.autostage", "true", cwd=directory)
    # What a clone has for `dvc plots`: the offline page, set as this repository's .dvc/config sets it
    # (a wrong path there fails the plots-page tests), and the custom chart templates.
    shutil.copytree(ROOT / "plots_page", directory / "plots_page")
    shutil.copytree(ROOT / ".dvc" / "plots", directory / ".dvc" / "plots")
    html_template = ConfigObj(str(ROOT / ".dvc" / "config"))["plots"]["html_template"]
    dvc("config", "plots.html_template", html_template, cwd=directory)
    git("add", "-A", cwd=directory)
    git("commit", "-q", "-m", "tiny pipeline", cwd=directory)
    return directory


@pytest.fixture(scope="session")
def built_project(tmp_path_factory, raw_files) -> Path:
    """A project where `dvc repro` ran once and its results are committed. Copy it, don't change it.

    It is built once for the whole run: under pytest-xdist, in the directory the workers share, by
    the first worker that asks for it while the others wait for it.
    """
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # this run's, shared by its workers
    directory, done = root / "built" / "project", root / "built" / "done"
    with open(root / "built.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if the build fails
        if not done.exists():
            shutil.rmtree(directory.parent, ignore_errors=True)  # what a failed build left
            init_project(directory, raw_files)
            dvc("repro", cwd=directory)
            git("add", "-A", cwd=directory)
            git("commit", "-q", "-m", "results", cwd=directory)
            done.touch()
    return directory


@pytest.fixture
def project(tmp_path, built_project) -> Path:
    """A fresh copy of the built project, with its DVC cache, for a test to change."""
    directory = tmp_path / "project"
    shutil.copytree(built_project, directory, symlinks=True)
    return directory


@pytest.fixture(scope="module")
def mistaken(prepared, tmp_path_factory) -> Path:
    """For the mistakes tests: a directory with the prepared model and background, a test split relabelled so
    that every image is a mistake, and tiny params."""
    from mistakes_data import IMAGES, PARAMS, labels_one_or_two_off

    from fashion_shap.data import prediction_rows
    from fashion_shap.files import save_csv
    from fashion_shap.model import load_model

    directory = tmp_path_factory.mktemp("mistaken")
    (directory / "data/test").mkdir(parents=True)
    shutil.copytree(prepared / "models", directory / "models")
    shutil.copy(prepared / "data/background.npy", directory / "data/background.npy")
    x_test = np.load(prepared / "data/test/x.npy")[:IMAGES]
    predicted = load_model(directory / "models/model.weights.h5").predict(x_test, verbose=0).argmax(axis=1)
    labels = labels_one_or_two_off(predicted).astype(np.uint8)
    np.save(directory / "data/test/x.npy", x_test)
    np.save(directory / "data/test/y.npy", labels)
    save_csv(directory / "plots/confusion.csv", prediction_rows(labels, predicted))  # as the evaluate stage writes it
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["mistakes"] = dict(PARAMS)
    write_params(directory, params)
    return directory


@pytest.fixture(scope="module")
def reference(mistaken) -> np.ndarray:
    """The values of every mistake, in this process, in one shard: what every other way must reproduce."""
    from mistakes_data import SETTINGS, inputs, weights

    from fashion_shap.mistakes.shards import explain_in_process

    _, background, images, classes = inputs(mistaken)
    return explain_in_process(weights(mistaken), background, images, classes, SETTINGS, shard_size=len(images))

