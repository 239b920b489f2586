"""The mistakes explained in shards on Ray: a local Ray with one worker per core, or a cluster.

Each worker is an actor that receives the model's weights file, the background and the images once and
then explains shards by position; a lost worker is restarted and its shard rerun. An image's values do
not depend on the images explained with it, and each shard is written to its own rows, so the bytes
are the same for any number of workers and any shard size, and without Ray. Only Ray's public API.

The workers load TensorFlow; the stage's own process does not, and its workers start sooner (its imports
took 5.5 s with TensorFlow, 1.4 s without, and it no longer loads the model to predict: evaluate's
predictions say which images are mistakes). A worker's one-line error (a damaged weights file, an engine
that cannot take the model) is the stage's.
"""

import logging
import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import ray
from ray.util.actor_pool import ActorPool
from tqdm import tqdm

import deepshap
import fashion_shap
from fashion_shap.engines import make_explainer
from fashion_shap.params import PipelineError, is_terminal

RETRIES = 3  # times Ray restarts a lost worker, and reruns the shard it held
CONNECT_TIMEOUT = 5  # seconds to wait for a cluster's port to answer
# One thread per worker, each on its own core: numba (the fast engine's loop), OpenBLAS and TensorFlow
# would otherwise each start a thread per core in every worker. Read when the worker process starts.
WORKER_ENV = {
    "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
}


def model_file(path: str | Path) -> tuple[str, bytes]:
    """Return (the weights file's path, its bytes): how the workers get the model, wherever they run."""
    return str(path), Path(path).read_bytes()


class ShardExplainer:
    """Explains shards of the mistakes, given by position, for each image's two classes.

    model_file: (the weights file's path, its bytes).
    """

    def __init__(self, model_file: tuple[str, bytes], background: np.ndarray, images: np.ndarray, classes: np.ndarray,
                 settings: dict):
        from fashion_shap.model import load_model  # TensorFlow loads here, in the worker

        self.images, self.classes = images, classes
        self.explainer = make_explainer(load_model(*model_file), settings["engine"], settings["output"],
                                        settings["softmax_rule"], settings["chunk_size"])
        # The fast engine's forward pass of the background, made once for every shard.
        self.background = (self.explainer.prepare(background) if isinstance(self.explainer, deepshap.Explainer)
                           else background)

    def explain(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        """Return (start, the values of images start..stop for their two classes, (stop - start, 28, 28, 1, 2))."""
        classes = self.classes[start:stop]
        return start, self.explainer.shap_values(self.images[start:stop], self.background, classes=classes)


@ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
class RayWorker:
    """An actor holding a ShardExplainer, built on its first shard from what the driver put in the object store.

    Not from constructor arguments: Ray cannot promise to restart an actor whose constructor
    arguments live in the object store (ray-project/ray#53727; it logs an error saying so). A
    restarted worker rebuilds it from the references that the shard it reruns carries.
    """

    def __init__(self):
        self.worker = None

    def explain(self, shared: list, settings: dict, start: int, stop: int) -> tuple[int, np.ndarray]:
        """shared: references to (model_file, background, images, classes), nested in a list so that Ray passes them
        unresolved: each worker fetches them once."""
        if self.worker is None:
            self.worker = ShardExplainer(*ray.get(shared), settings)
        return self.worker.explain(start, stop)


def shard_bounds(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def explain_in_process(model_file: tuple[str, bytes], background: np.ndarray, images: np.ndarray, classes: np.ndarray,
                       settings: dict, shard_size: int) -> np.ndarray:
    """Return the values of every image, shard by shard in this process: what Ray must reproduce."""
    worker = ShardExplainer(model_file, background, images, classes, settings)
    values = np.zeros(images.shape + (2,), dtype=np.float32)
    for start, stop in shard_bounds(len(images), shard_size):
        values[start:stop] = worker.explain(start, stop)[1]
    return values


def check_reachable(address: str) -> str:
    """Return address if its host answers on its port, else fail with one line.

    "auto" is what ray.init makes of it: RAY_ADDRESS, checked here, else the cluster `ray start` made
    on this machine, which ray.init finds (or fails to, in connect).
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
        if address == "auto":
            return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"params.yaml: mistakes.ray_address must be empty (a local Ray), auto, host:port or "
                            f"ray://host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise PipelineError(f"params.yaml: mistakes.ray_address {address!r} cannot be reached ({error}); start the "
                            f"cluster, or leave it empty for a local Ray") from None
    return address


def connect(address: str, workers: int | None) -> Path | None:
    """Start a local Ray of workers CPUs (None: one per core) if address is empty, else join the cluster there.

    address: as check_reachable returns it. Returns the local Ray's session folder (its logs and sockets,
    under the temporary directory), which nothing else will remove; None for a cluster, whose it is.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would report usage over the internet
    options = {"log_to_driver": False, "logging_level": logging.WARNING}
    # ray.init makes SIGTERM exit at once (sys.exit), bypassing the stage's handler (fashion_shap.params.run),
    # which reports a stop in one line: keep the stage's.
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if not address:
            # Ray's own setting, read by the processes it starts: no idle workers started before ray.init returns,
            # one per core, which the actors cannot take (they run with WORKER_ENV). Measured: ray.init 2.7-3.3 s
            # against 4.0-4.2 s, the first shard no later.
            os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
            # "local": a new Ray of its own, even where RAY_ADDRESS or a `ray start` cluster exists.
            context = ray.init(address="local", num_cpus=workers, include_dashboard=False,
                               runtime_env={"env_vars": WORKER_ENV}, **options)
            return Path(context.address_info["session_dir"])
        join(address, options)
        return None
    finally:
        signal.signal(signal.SIGTERM, handler)


def join(address: str, options: dict) -> None:
    """Join the cluster at address, or fail with one line naming the param."""
    # The cluster's nodes need the project's dependencies installed; its code travels with the job.
    runtime_env = {"env_vars": WORKER_ENV, "py_modules": [fashion_shap, deepshap], "excludes": ["__pycache__"]}
    try:
        ray.init(address=address, runtime_env=runtime_env, **options)
    except (ConnectionError, RuntimeError) as error:
        raise PipelineError(f"params.yaml: mistakes.ray_address {address!r}: {str(error).splitlines()[0]} (a cluster "
                            f"with token authentication also needs RAY_AUTH_MODE=token and its token here)") from None


def disconnect(session: Path | None) -> None:
    """Shut Ray down (a local one's processes end), and remove the session folder of a local Ray: Ray keeps
    every session's under the temporary directory (/tmp/ray/session_*), and the latest's link beside them."""
    ray.shutdown(wait_for_processes=True)  # its processes no longer write in the folder
    if session is None:
        return
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and latest.resolve() == session.resolve():
        latest.unlink()


def explain_on_ray(address: str, workers: int | None, model_file: tuple[str, bytes], background: np.ndarray,
                   images: np.ndarray, classes: np.ndarray, settings: dict, shard_size: int) -> np.ndarray:
    """Return the values of every image, (images, 28, 28, 1, 2), explained in shards by one actor per Ray CPU.

    address: empty for a local Ray of workers CPUs (None: one per core), else a reachable cluster's.
    model_file: (the weights file's path, its bytes).
    """
    values = np.zeros(images.shape + (2,), dtype=np.float32)
    shards = shard_bounds(len(images), shard_size)
    if not shards:
        return values
    if not address and len(shards) == 1:
        # Nothing to share out: starting a local Ray (some 15 s) would only add time; the bytes are the same.
        print("mistakes: 1 shard, explained in this process")
        return explain_in_process(model_file, background, images, classes, settings, shard_size)
    session = None  # until connect returns: a Ray stopped while it starts is shut down all the same
    try:
        session = connect(address, workers)
        count = min(int(ray.cluster_resources().get("CPU", 1)), len(shards))
        print(f"mistakes: {len(shards)} shards of up to {shard_size} images on {count} Ray workers")
        # Put once in the object store: the workers share them instead of receiving a copy each.
        shared = [ray.put(value) for value in (model_file, np.asarray(background), images, classes)]
        pool = ActorPool([RayWorker.remote() for _ in range(count)])
        results = pool.map_unordered(lambda actor, bounds: actor.explain.remote(shared, settings, *bounds), shards)
        for start, shard in tqdm(results, total=len(shards), desc="mistakes", unit="shard", disable=not is_terminal()):
            values[start : start + len(shard)] = shard  # each shard to its own rows, whatever order they finish in
        return values
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, PipelineError):  # a worker's one-line error, without Ray's traceback
            raise PipelineError(str(error.cause)) from None
        raise
    except ray.exceptions.RayActorError as error:
        raise PipelineError(f"a Ray worker died {RETRIES + 1} times on one shard (out of memory? lower "
                            f"mistakes.shard_size or mistakes.chunk_size): {str(error).splitlines()[0]}") from None
    finally:
        disconnect(session)
