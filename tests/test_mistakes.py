"""mistakes: the measures on known maps, shards and Ray giving the same bytes, faults, and the stage in DVC.

The stage's data here: the prepared tiny model, and the first test images relabelled so that every
one is a mistake (its label is its prediction plus 1 or 2), giving pairs of different sizes.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import ROOT, assert_one_line_error, dvc, run_stage, set_param
from mistakes_data import ARGS, IMAGES, SETTINGS, copy_with, inputs, weights

from fashion_shap.mistakes.shards import connect, disconnect, explain_in_process
from fashion_shap.model import load_model
from fashion_shap.params import PipelineError
from stages.mistakes import main

# For the Ray clusters and the stages the tests start: no usage report over the network, and token
# authentication with a throwaway token (a `ray start` cluster of Ray 2.60 expects a token).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- The stage ---

def test_stage_without_mistakes_writes_empty_outputs(mistaken, tmp_path, monkeypatch):
    directory = copy_with(mistaken, tmp_path / "stage")
    model = load_model(directory / "models/model.weights.h5")
    x_test = np.load(directory / "data/test/x.npy")
    np.save(directory / "data/test/y.npy", model.predict(x_test, verbose=0).argmax(axis=1).astype(np.uint8))
    monkeypatch.chdir(directory)
    main(ARGS)
    assert np.load("out/mistakes/shap_values.npy").shape == (0, 28, 28, 1, 2)
    assert json.loads(Path("out/mistakes.json").read_text()) == {"mistakes": 0}
    assert json.loads(Path("out/report.json").read_text())["pairs"] == {}
    assert Path("out/mistakes.png").is_file()


@pytest.mark.parametrize("address, fragment", [("127.0.0.1:{port}", "cannot be reached"),
                                               ("ray://127.0.0.1:{port}", "cannot be reached"),
                                               ("auto", "cannot be reached"),  # RAY_ADDRESS, set below
                                               ("head-node", "must be empty")])
def test_bad_cluster_address_fails_at_once_naming_the_param(mistaken, tmp_path, monkeypatch, address, fragment):
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # where "auto" looks first
    directory = copy_with(mistaken, tmp_path / "stage", ray_address=address.format(port=port))
    monkeypatch.chdir(directory)
    with pytest.raises(PipelineError, match="mistakes.ray_address") as error:
        main(ARGS)
    assert fragment in str(error.value)
    assert not (directory / "out").exists()


@pytest.mark.slow
def test_unreachable_cluster_is_one_line_from_the_command_line(mistaken, tmp_path):
    directory = copy_with(mistaken, tmp_path / "stage", ray_address=f"127.0.0.1:{free_port()}")
    result = run_stage("mistakes", *ARGS, cwd=directory, check=False)
    assert_one_line_error(result, "mistakes.ray_address", "cannot be reached")
    assert not (directory / "out").exists()


def test_background_size_above_the_background_names_the_param_and_writes_nothing(mistaken, tmp_path, monkeypatch):
    directory = copy_with(mistaken, tmp_path / "stage", background_size=1_000_000)
    monkeypatch.chdir(directory)
    available = len(np.load(directory / "data/background.npy"))
    with pytest.raises(PipelineError, match=f"mistakes.background_size is 1000000, but the background has only "
                                            f"{available} images; lower it in params.yaml"):
        main(ARGS)
    assert not (directory / "out").exists()


# --- On Ray ---

def start_ray(command: list[str], log) -> subprocess.Popen:
    """Start `ray start --block ...` (it stays in the foreground, so the test knows the processes it owns)."""
    return subprocess.Popen(["ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                             "--disable-usage-stats", *command], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, **RAY_ENV))


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill these processes and every process they started, by id (a throwaway cluster needs no draining)."""
    family = [psutil.Process(process.pid) for process in processes if process.poll() is None]
    kill_all(family + [child for parent in family for child in parent.children(recursive=True)])


def kill_all(family: list[psutil.Process]) -> None:
    """Kill these processes, by id, and wait for them to end."""
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


@pytest.fixture
def two_node_cluster(tmp_path):
    """A Ray cluster of two nodes on this machine, one CPU each; yields its head's address."""
    port = free_port()
    # Its own short temporary directory (socket paths are limited to 107 characters): the cluster's
    # address is recorded there, not where other Ray users of the machine look for theirs.
    temporary = tempfile.mkdtemp(prefix="ray")
    processes = []
    with open(tmp_path / "ray.log", "w") as log:
        try:
            processes.append(start_ray(["--head", f"--port={port}", "--include-dashboard=false",
                                        f"--temp-dir={temporary}"], log))
            wait_for_started(tmp_path / "ray.log", processes)
            processes.append(start_ray([f"--address=127.0.0.1:{port}"], log))
            wait_for_started(tmp_path / "ray.log", processes)
            yield f"127.0.0.1:{port}"
        finally:
            stop(processes)
            shutil.rmtree(temporary, ignore_errors=True)


def wait_for_started(log: Path, processes: list[subprocess.Popen], timeout: float = 120) -> None:
    """Wait until each `ray start` process writing to log said "Ray runtime started.", which it says once its node is
    in the cluster (measured: asking the cluster from a process of ours instead took some 3 s of CPU)."""
    deadline = time.monotonic() + timeout
    while log.read_text().count("Ray runtime started.") < len(processes):
        assert all(process.poll() is None for process in processes), f"a `ray start` ended: {log.read_text()}"
        assert time.monotonic() < deadline, f"Ray's nodes not started after {timeout} s: {log.read_text()}"
        time.sleep(0.2)


def run_mistakes(directory: Path, **environment: str) -> subprocess.Popen:
    """Start the stage in directory, as dvc.yaml runs it, with these environment variables added."""
    return subprocess.Popen([sys.executable, "-m", "stages.mistakes", *ARGS], cwd=directory, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, **RAY_ENV, **environment))


@pytest.mark.slow
def test_stage_runs_on_a_two_node_cluster_through_the_address_param_and_a_workers_error_is_one_line(
        mistaken, reference, two_node_cluster, tmp_path):
    directory = copy_with(mistaken, tmp_path / "stage", ray_address=two_node_cluster)
    stage = run_mistakes(directory)
    stdout, stderr = stage.communicate(timeout=300)
    assert stage.returncode == 0, stderr
    assert "on 2 Ray workers" in stdout
    np.testing.assert_array_equal(np.load(directory / "out/mistakes/shap_values.npy"), reference)
    assert json.loads((directory / "out/mistakes.json").read_text())["mistakes"] == IMAGES

    # A damaged weights file, which only the workers load (the stage's own process loads no model): the stage
    # fails in one line naming it, as in one process, not with Ray's traceback.
    damaged = copy_with(mistaken, tmp_path / "damaged", ray_address=two_node_cluster)
    (damaged / "models/model.weights.h5").write_bytes(b"not an HDF5 file")
    stage = run_mistakes(damaged)
    stdout, stderr = stage.communicate(timeout=300)
    failed = subprocess.CompletedProcess(stage.args, stage.returncode, stdout, stderr)
    assert_one_line_error(failed, "cannot load model weights from models/model.weights.h5", "run the train stage again")
    assert not (damaged / "out").exists()


def explaining_worker(stage: subprocess.Popen) -> psutil.Process | None:
    """Return a Ray worker of the stage's own Ray that is explaining a shard right now, if any."""
    for process in psutil.Process(stage.pid).children(recursive=True):
        try:
            if " ".join(process.cmdline()).startswith("ray::RayWorker.explain"):
                return process
        except psutil.NoSuchProcess:
            pass
    return None


def slow_stage(prepared: Path, mistaken: Path, target: Path) -> Path:
    """Copy the mistaken stage directory with a background of 200 training images, so that each shard takes
    long enough to be caught on Ray."""
    directory = copy_with(mistaken, target, background_size=200)
    np.save(directory / "data/background.npy", np.load(prepared / "data/train/x.npy")[:200])
    return directory


@pytest.fixture
def ray_root() -> Iterator[Path]:
    """A temporary directory of its own for the local Rays a test starts (RAY_TMPDIR): their session folders go
    to ray/ in it, apart from other Ray users'. Short: socket paths are limited to 107 characters."""
    directory = Path(tempfile.mkdtemp(prefix="ray"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def family_once_explaining(process: subprocess.Popen, timeout: float = 300) -> list[psutil.Process]:
    """Wait until a Ray worker under process explains a shard; return every process under it then, its Ray's too."""
    deadline = time.monotonic() + timeout
    while explaining_worker(process) is None:
        assert process.poll() is None and time.monotonic() < deadline, "no worker was seen explaining a shard"
        time.sleep(0.05)
    return psutil.Process(process.pid).children(recursive=True)


@pytest.mark.slow
def test_a_local_ray_starts_no_idle_workers_that_the_actors_could_not_take(ray_root, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(ray_root))
    monkeypatch.delenv("RAY_prestart_worker_first_driver", raising=False)  # connect's default, not the caller's
    session = connect("", 2)
    try:
        titles = [" ".join(process.cmdline()) for process in psutil.Process().children(recursive=True)]
        assert any(title.startswith("ray::RuntimeEnvAgent") for title in titles)  # the check below sees Ray's names
        assert not any(title.startswith("ray::IDLE") for title in titles)
    finally:
        disconnect(session)


@pytest.mark.slow
def test_ctrl_c_on_ray_is_one_line_and_leaves_no_ray_process_nor_session(prepared, mistaken, tmp_path, ray_root):
    directory = slow_stage(prepared, mistaken, tmp_path / "stage")
    stage = run_mistakes(directory, RAY_TMPDIR=str(ray_root))
    family = []
    try:
        family = family_once_explaining(stage)
        # A terminal's Ctrl-C signals the whole foreground group, but Ray's processes block SIGINT: the stage is
        # the one to act.
        stage.send_signal(signal.SIGINT)
        _, stderr = stage.communicate(timeout=120)
        assert stage.returncode == 130
        assert stderr.splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr
        assert not psutil.wait_procs(family, timeout=20)[1]  # none left alive
        assert not list((ray_root / "ray").glob("session*"))
        assert not (directory / "out").exists()
    finally:
        stop([stage])  # if the test failed before its end
        kill_all(family)


@pytest.mark.slow
def test_local_ray_retries_a_worker_killed_in_a_shard_gives_the_bytes_of_one_process_and_removes_its_session(
        prepared, mistaken, tmp_path, ray_root):
    """The stage's own local Ray, one worker per core: a worker killed while it explains a shard is
    replaced, the shard runs again, and the values are those of one process, byte for byte. Then Ray's
    session folder is gone, and the link to the latest (one local Ray started for both checks: a Ray's
    start is most of either's time)."""
    directory = slow_stage(prepared, mistaken, tmp_path / "stage")
    _, background, images, classes = inputs(directory, background_size=200)
    expected = explain_in_process(weights(directory), background, images, classes, SETTINGS, shard_size=len(images))

    stage = run_mistakes(directory, RAY_TMPDIR=str(ray_root))
    killed = None
    while killed is None and stage.poll() is None:
        worker = explaining_worker(stage)
        if worker is not None:
            worker.kill()
            killed = worker.pid
        time.sleep(0.05)
    stdout, stderr = stage.communicate(timeout=300)
    assert killed is not None, "no worker was seen explaining a shard"
    assert stage.returncode == 0, stderr
    assert int(re.search(r"on (\d+) Ray workers", stdout).group(1)) >= 2  # shards ran side by side
    np.testing.assert_array_equal(np.load(directory / "out/mistakes/shap_values.npy"), expected)
    assert (ray_root / "ray").is_dir()  # where the session was
    assert not list((ray_root / "ray").glob("session*"))  # its folder, and the link to the latest


# --- In the pipeline ---

def test_only_the_mistakes_stage_declares_mistakes_params():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declaring = {name for name, stage in stages.items()
                 if any(str(param).startswith("mistakes.") for param in stage.get("params", []))}
    assert declaring == {"mistakes"}


@pytest.mark.slow
def test_a_killed_dvc_repro_stops_the_stage_and_its_ray(project, ray_root):
    """As when a CI timeout stops `dvc repro` with SIGTERM: dvc ends at once and signals none of its children.
    Run by /bin/sh, which (dash, unlike bash) stays between dvc and the stage."""
    # Test labels shifted by one, so that most test images are mistakes; they go in shards of 4 to a local Ray,
    # against 200 background images (the training images) one at a time: some 30 s of explaining, which a stage
    # left running would outlast the wait below by. The inputs are changed in place and only the mistakes stage
    # runs (--single-item): retraining a model to make mistakes, as before, cost some 6 s of a TensorFlow process.
    for path, array in (("data/test/y.npy", (np.load(project / "data/test/y.npy") + 1) % 10),
                        ("data/background.npy", np.load(project / "data/train/x.npy")[:200])):
        (project / path).unlink()  # not written through: the file may be a link into DVC's cache
        np.save(project / path, array)
    for key, value in (("background_size", 200), ("shard_size", 4), ("chunk_size", 1)):
        set_param(project, "mistakes", key, value)
    environment = dict(os.environ, **RAY_ENV, RAY_TMPDIR=str(ray_root), SHELL="/bin/sh")
    repro = subprocess.Popen(["dvc", "repro", "--single-item", "mistakes"], cwd=project, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    family = []
    try:
        family = family_once_explaining(repro)
        repro.terminate()
        assert not psutil.wait_procs(family, timeout=20)[1]  # the stage, the shell and Ray: none left alive
        _, stderr = repro.communicate(timeout=30)  # the pipes close when the last process that holds them ends
        assert stderr.splitlines()[-1] == "error: interrupted"  # the stage's last word, though dvc is gone
        assert not list((ray_root / "ray").glob("session*"))
    finally:
        stop([repro])  # dvc and what runs under it, if the test failed before it killed dvc
        kill_all(family)  # what a killed dvc left running
    # dvc deleted the stage's cached outputs before it ran; the last good ones come back from the cache.
    assert not (project / "data/mistakes").exists()
    dvc("checkout", "mistakes", cwd=project)
    assert (project / "data/mistakes/shap_values.npy").is_file()
