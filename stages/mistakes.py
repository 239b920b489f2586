"""Explain every test image the model gets wrong, for its true and its predicted class, on Ray.

Finds the misclassified test images and explains each against the first mistakes.background_size
images of the pipeline's background, with the explain stage's engine, output and softmax rule. The
images go out in shards of mistakes.shard_size to Ray workers: a local Ray with one worker per core
when mistakes.ray_address is empty, else the cluster at that address ("auto", "host:port" or
"ray://host:port"). Each worker is an actor that receives the model, the background and the images
once and then explains shards by position; a lost worker is restarted and its shard rerun. An
image's values do not depend on the images explained with it, and each shard is written to its own
rows, so the bytes are the same for any number of workers and any shard size, and without Ray.

Reads: the model's weights, the background and the test directory.
Writes: a directory (shap_values.npy (mistakes, 28, 28, 1, 2), whose last axis holds the true class
then the predicted one; test_indices.npy, true_classes.npy, predicted_classes.npy), metrics JSON
and a PNG of the most frequent confusion pairs: example maps, and the pair's mean map of
(predicted class minus true class).

Concentration, in the metrics: a pair's region is the tenth of the pixels (REGION_SHARE) where the
mean of its mistakes' maps for the predicted class is largest; a mistake is concentrated there when
at least a fifth (CONCENTRATED) of its positive attribution for the predicted class lies in that
region, twice what a tenth of the pixels drawn at random would hold on average. The metrics give the
share of the pair's mistakes that are concentrated, and the mean of their shares in the region.
"""

import logging
import os
import socket
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from ray.util.actor_pool import ActorPool  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from shap.plots.colors import red_transparent_blue  # noqa: E402
from tqdm import tqdm  # noqa: E402

import deepshap  # noqa: E402
import stages  # noqa: E402
from deepshap import shap_reference  # noqa: E402
from stages.common import (  # noqa: E402
    CLASS_NAMES, PipelineError, atomic_path, is_terminal, load_split, parse_paths, read_params, require_positive,
    run, save_figure, save_json,
)
from stages.engines import check_engine_params, fast_explainer  # noqa: E402
from stages.model import load_model  # noqa: E402

REGION_SHARE = 0.1  # of the pixels: a pair's region
# Of a mistake's positive attribution inside the region: twice what a region of as many pixels, drawn
# at random, holds on average.
CONCENTRATED = 2 * REGION_SHARE
RETRIES = 3  # times Ray restarts a lost worker, and reruns the shard it held
CONNECT_TIMEOUT = 5  # seconds to wait for a cluster's port to answer
# One thread per worker, each on its own core: numba (the fast engine's loop), OpenBLAS and TensorFlow
# would otherwise each start a thread per core in every worker. Read when the worker process starts.
WORKER_ENV = {
    "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
}
FIGURE_EXAMPLES = 3  # mistakes shown per pair, the first in test order
SCALE_PERCENTILE = 99  # of a row's |values|: its colour scale runs from -limit to +limit
MEAN_SMOOTHING = 1.0  # pixels, the sigma of the Gaussian that smooths the mean maps in the figure
OVERLAY_ALPHA = 0.15  # the grey image under each map, as shap.image_plot draws it
CELL = 1.1  # inches per image
FONT_SIZE = 8  # points


def find_mistakes(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (test indices of the misclassified images, their classes (mistakes, 2): [true, predicted])."""
    predicted = probabilities.argmax(axis=1)
    indices = np.flatnonzero(predicted != labels)
    return indices, np.stack([labels[indices], predicted[indices]], axis=1).astype(np.int64)


class ShardExplainer:
    """Explains shards of the mistakes, given by position."""

    def __init__(self, model, background: np.ndarray, images: np.ndarray, classes: np.ndarray, settings: dict):
        self.model, self.background, self.images, self.classes = model, background, images, classes
        self.output = settings["output"]
        self.explainer = None if settings["engine"] == "shap" else fast_explainer(
            model, settings["output"], settings["softmax_rule"], settings["chunk_size"])

    def explain(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        """Return (start, the values of images start..stop for their two classes, (stop - start, 28, 28, 1, 2))."""
        images, classes = self.images[start:stop], self.classes[start:stop]
        if self.explainer is not None:
            return start, self.explainer.shap_values(images, self.background, classes=classes)
        values = shap_reference(self.model, self.background, images, self.output)  # every class
        return start, np.take_along_axis(values, classes[:, np.newaxis, np.newaxis, np.newaxis, :], axis=-1)


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
        """shared: references to (model, background, images, classes), nested in a list so that Ray passes them
        unresolved: each worker fetches them once."""
        if self.worker is None:
            self.worker = ShardExplainer(*ray.get(shared), settings)
        return self.worker.explain(start, stop)


def shard_bounds(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def explain_in_process(model, background: np.ndarray, images: np.ndarray, classes: np.ndarray, settings: dict,
                       shard_size: int) -> np.ndarray:
    """Return the values of every image, shard by shard in this process: what Ray must reproduce."""
    worker = ShardExplainer(model, background, images, classes, settings)
    values = np.zeros(images.shape + (2,), dtype=np.float32)
    for start, stop in shard_bounds(len(images), shard_size):
        values[start:stop] = worker.explain(start, stop)[1]
    return values


def check_reachable(address: str) -> str:
    """Return address if its host answers on its port; "auto" becomes the address Ray finds. Else fail with one line."""
    if address == "auto":
        try:
            # What ray.init does with "auto": RAY_ADDRESS, else the cluster `ray start` last recorded.
            host_port = ray._private.services.canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as error:
            raise PipelineError(f"params.yaml: mistakes.ray_address is auto, but {error}") from None
    else:
        host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"params.yaml: mistakes.ray_address must be empty (a local Ray), auto, host:port or "
                            f"ray://host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise PipelineError(f"params.yaml: mistakes.ray_address {address!r} cannot be reached ({error}); start the "
                            f"cluster, or leave it empty for a local Ray") from None
    return address if address != "auto" else host_port


def connect(address: str, workers: int | None) -> None:
    """Start a local Ray of workers CPUs (None: one per core) if address is empty, else join the cluster there.

    address: as check_reachable returns it.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would report usage over the internet
    options = {"log_to_driver": False, "logging_level": logging.WARNING}
    if not address:
        # "local": a new Ray of its own, even where RAY_ADDRESS or a `ray start` cluster exists.
        ray.init(address="local", num_cpus=workers, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV},
                 **options)
        return
    # The cluster's nodes need the project's dependencies installed; its code travels with the job.
    runtime_env = {"env_vars": WORKER_ENV, "py_modules": [stages, deepshap], "excludes": ["__pycache__"]}
    try:
        ray.init(address=address, runtime_env=runtime_env, **options)
    except (ConnectionError, RuntimeError) as error:
        raise PipelineError(f"params.yaml: mistakes.ray_address {address!r}: {str(error).splitlines()[0]} (a cluster "
                            f"with token authentication also needs RAY_AUTH_MODE=token and its token here)") from None


def explain_on_ray(address: str, workers: int | None, model, background: np.ndarray, images: np.ndarray,
                   classes: np.ndarray, settings: dict, shard_size: int) -> np.ndarray:
    """Return the values of every image, (images, 28, 28, 1, 2), explained in shards by one actor per Ray CPU.

    address: empty for a local Ray of workers CPUs (None: one per core), else a reachable cluster's.
    """
    values = np.zeros(images.shape + (2,), dtype=np.float32)
    shards = shard_bounds(len(images), shard_size)
    if not shards:
        return values
    if not address and len(shards) == 1:
        # Nothing to share out: starting a local Ray (some 15 s) would only add time; the bytes are the same.
        print("mistakes: 1 shard, explained in this process")
        return explain_in_process(model, background, images, classes, settings, shard_size)
    connect(address, workers)
    try:
        count = min(int(ray.cluster_resources().get("CPU", 1)), len(shards))
        print(f"mistakes: {len(shards)} shards of up to {shard_size} images on {count} Ray workers")
        # Put once in the object store: the workers share them instead of receiving a copy each.
        shared = [ray.put(value) for value in (model, np.asarray(background), images, classes)]
        pool = ActorPool([RayWorker.remote() for _ in range(count)])
        results = pool.map_unordered(lambda actor, bounds: actor.explain.remote(shared, settings, *bounds), shards)
        for start, shard in tqdm(results, total=len(shards), desc="mistakes", unit="shard", disable=not is_terminal()):
            values[start : start + len(shard)] = shard  # each shard to its own rows, whatever order they finish in
        return values
    except ray.exceptions.RayActorError as error:
        raise PipelineError(f"a Ray worker died {RETRIES + 1} times on one shard (out of memory? lower "
                            f"mistakes.shard_size or mistakes.chunk_size): {str(error).splitlines()[0]}") from None
    finally:
        ray.shutdown()


def class_maps(values: np.ndarray) -> np.ndarray:
    """Return (mistakes, 28, 28, 2) float64: the values summed over channels, for the true and the predicted class."""
    return values.astype(np.float64).sum(axis=-2)


def pair_name(true: int, predicted: int) -> str:
    return f"{CLASS_NAMES[true]} -> {CLASS_NAMES[predicted]}"


def pair_counts(classes: np.ndarray) -> Counter:
    """Return how many mistakes each (true, predicted) pair has; classes (mistakes, 2)."""
    return Counter(map(tuple, classes.tolist()))


def top_pairs(classes: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Return the count most frequent (true, predicted) pairs, most frequent first, ties in class order."""
    counts = pair_counts(classes)
    return sorted(counts, key=lambda pair: (-counts[pair], pair))[:count]


def region_shares(predicted_maps: np.ndarray) -> np.ndarray:
    """Return each map's share of its positive values in the region of the maps' mean, (maps,).

    predicted_maps: (maps, 28, 28), the maps of one pair's mistakes for the predicted class.
    """
    flat = predicted_maps.reshape(len(predicted_maps), -1)
    region = np.argsort(-flat.mean(axis=0), kind="stable")[: round(REGION_SHARE * flat.shape[1])]
    positive = np.clip(flat, 0, None)
    totals = positive.sum(axis=1)
    return np.divide(positive[:, region].sum(axis=1), totals, out=np.zeros_like(totals), where=totals > 0)


def mistake_metrics(classes: np.ndarray, maps: np.ndarray, pairs: list[tuple[int, int]], test_size: int) -> dict:
    """Return the metrics: the mistakes, their count per pair, and for the top pairs how concentrated they are."""
    top = {}
    for true, predicted in pairs:
        shares = region_shares(maps[(classes[:, 0] == true) & (classes[:, 1] == predicted), ..., 1])
        top[pair_name(true, predicted)] = {
            "mistakes": len(shares),
            "concentrated_share": round(float(np.mean(shares >= CONCENTRATED)), 6),
            "mean_share_in_region": round(float(shares.mean()), 6),
        }
    return {
        "mistakes": len(classes),
        "error_rate": round(len(classes) / test_size, 6),
        "pairs": {pair_name(*pair): count for pair, count in sorted(pair_counts(classes).items())},
        "top_pairs": top,
    }


def row_limit(maps: np.ndarray) -> float:
    """Return the colour limit of a row's maps: the SCALE_PERCENTILE of their |values|, or 1 if all are 0."""
    return float(np.percentile(np.abs(maps), SCALE_PERCENTILE)) or 1.0


def draw_map(axis: Axes, image: np.ndarray, class_map: np.ndarray, limit: float, title: str) -> AxesImage:
    """Draw a map over the inverted grey image, as shap.image_plot does; return the map."""
    axis.imshow(-image[..., 0], cmap="gray", alpha=OVERLAY_ALPHA)
    axis.set_title(title, fontsize=FONT_SIZE)
    return axis.imshow(class_map, cmap=red_transparent_blue, vmin=-limit, vmax=limit)


def draw_pair(row: SubFigure, images: np.ndarray, maps: np.ndarray, indices: np.ndarray, pair: tuple[int, int]) -> None:
    """Draw one pair's row: examples (image, map for the true class, for the predicted one), then the mean map.

    images, maps (images, 28, 28, 2), indices: the pair's mistakes, in test order.
    """
    true, predicted = (CLASS_NAMES[c] for c in pair)
    row.suptitle(f"{true} taken for {predicted}: {len(images)} mistakes", fontsize=FONT_SIZE + 1, x=0.01, ha="left")
    axes = row.subplots(1, 3 * FIGURE_EXAMPLES + 1)
    for axis in axes:
        axis.axis("off")
    shown = slice(0, FIGURE_EXAMPLES)
    limit = row_limit(maps[shown])
    for slot, (image, image_maps, index) in enumerate(zip(images[shown], maps[shown], indices[shown])):
        image_axis, true_axis, predicted_axis = axes[3 * slot : 3 * slot + 3]
        image_axis.imshow(-image[..., 0], cmap="gray")
        image_axis.set_title(f"test image {index}", fontsize=FONT_SIZE)
        example = draw_map(true_axis, image, image_maps[..., 0], limit, f"for {true}")
        draw_map(predicted_axis, image, image_maps[..., 1], limit, f"for {predicted}")
    row.colorbar(example, ax=axes[:-1], shrink=0.8, pad=0.01, label="SHAP value")
    # Smoothed: single pixels of a map are noise of the background's draw (README, "How far to trust the figure").
    difference = gaussian_filter(maps[..., 1].mean(axis=0) - maps[..., 0].mean(axis=0), MEAN_SMOOTHING)
    mean = draw_map(axes[-1], images.mean(axis=0), difference, row_limit(difference),
                    f"mean {predicted}\nminus {true}")
    row.colorbar(mean, ax=axes[-1], shrink=0.8, pad=0.04, label="SHAP value")


def pairs_figure(images: np.ndarray, classes: np.ndarray, maps: np.ndarray, indices: np.ndarray,
                 pairs: list[tuple[int, int]]) -> Figure:
    """Return a figure with a row per pair (draw_pair), or a line saying there are no mistakes."""
    columns = 3 * FIGURE_EXAMPLES + 1
    figure = plt.figure(figsize=(columns * CELL + 1.5, max(len(pairs), 1) * (CELL + 0.6) + 0.4), layout="constrained")
    if not pairs:
        figure.text(0.5, 0.5, "no mistakes", ha="center")
        return figure
    figure.suptitle("The most frequent mistakes: examples with their SHAP maps for the true and the predicted class "
                    "(red pushes towards the class), and the mean map of predicted minus true over the pair's images, "
                    f"smoothed over {MEAN_SMOOTHING:g} pixel", fontsize=FONT_SIZE + 1, wrap=True)
    for row, pair in zip(np.atleast_1d(figure.subfigures(len(pairs), 1)), pairs):
        members = np.flatnonzero((classes[:, 0] == pair[0]) & (classes[:, 1] == pair[1]))
        draw_pair(row, images[members], maps[members], indices[members], pair)
    return figure


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write each array as directory/<name>.npy; the directory appears whole or not at all."""
    with atomic_path(directory) as temporary:
        temporary.mkdir()
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array)


def read_settings() -> tuple[dict, dict]:
    """Return (the engine's settings, the mistakes params), checked; a cluster address must answer now."""
    settings = read_params("explain", {"engine": str, "output": str, "softmax_rule": str})
    check_engine_params(settings)
    params = read_params("mistakes", {
        "background_size": int, "shard_size": int, "chunk_size": int, "top_pairs": int, "ray_address": str,
    })
    for key in ("background_size", "shard_size", "chunk_size", "top_pairs"):
        require_positive(f"mistakes.{key}", params[key])
    settings["chunk_size"] = params["chunk_size"]
    if params["ray_address"]:
        params["ray_address"] = check_reachable(params["ray_address"])
    return settings, params


def main(argv: list[str] | None = None) -> None:
    settings, params = read_settings()
    model_path, background_path, test_dir, output_dir, metrics_path, figure_path = parse_paths(
        "mistakes", __doc__, ["model", "background", "test_dir", "mistakes_dir", "metrics", "figure"], argv
    )

    model = load_model(model_path)
    if settings["engine"] == "fast":  # fail here, in one line, if the fast engine cannot take the model
        fast_explainer(model, settings["output"], settings["softmax_rule"], settings["chunk_size"])
    background = np.load(background_path, mmap_mode="r")[: params["background_size"]]
    x_test, y_test = load_split(test_dir)
    indices, classes = find_mistakes(model.predict(x_test, verbose=0), y_test)
    images = x_test[indices]
    print(f"mistakes: {len(indices)} of {len(x_test)} test images misclassified, explained against "
          f"{len(background)} background images, {settings['engine']} engine, {settings['output']} output")

    values = explain_on_ray(params["ray_address"], None, model, background, images, classes, settings,
                            params["shard_size"])
    maps = class_maps(values)
    pairs = top_pairs(classes, params["top_pairs"])
    metrics = mistake_metrics(classes, maps, pairs, len(x_test))
    figure = pairs_figure(images, classes, maps, indices, pairs)

    save_arrays(output_dir, {"shap_values": values, "test_indices": indices, "true_classes": classes[:, 0],
                             "predicted_classes": classes[:, 1]})
    save_json(metrics_path, metrics)
    save_figure(figure, figure_path)
    plt.close(figure)
    counts = ", ".join(f"{name}: {top['mistakes']}" for name, top in metrics["top_pairs"].items())
    print(f"mistakes: the most frequent pairs, {counts}")


if __name__ == "__main__":
    run(main)
