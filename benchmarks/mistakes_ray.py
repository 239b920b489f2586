"""Benchmark the mistakes stage on Ray: images per second with 1 and 2 workers, scaling, memory per worker.

Explains the first misclassified test images against the first images of the pipeline's background,
as the stage does (the fast engine, shards on a local Ray, one numba thread per worker), once with 1
worker and once with 2, in the same run. Each worker first explains one image untimed (it loads the
model and the background, and the engine's compiled loop); then the shards are timed. Prints a table
and writes it to benchmarks/mistakes_results.md, with the throughput the measured scaling efficiency
predicts for 16 and 64 cores. Needs the pipeline's outputs (`dvc repro`):

    python benchmarks/mistakes_ray.py
"""

import fashion_shap  # noqa: F401, I001  first: it tunes OpenBLAS before NumPy loads it, as in the pipeline

import argparse
import os
import platform
import resource
import time
from datetime import date
from pathlib import Path

import numpy as np
import ray
from ray.util.actor_pool import ActorPool

from fashion_shap.data import load_split
from fashion_shap.mistakes.concentration import find_mistakes
from fashion_shap.mistakes.shards import RayWorker, connect, model_file, shard_bounds
from fashion_shap.model import load_model

WORKERS = (1, 2)
PREDICTED_CORES = (16, 64)
SETTINGS = {"engine": "fast", "output": "probability", "softmax_rule": "shap", "chunk_size": 100}  # params.yaml's
NOISY = " (other processes were running: the figures are noisy)"


def usage(worker) -> tuple[float, int]:
    """Return (CPU seconds, peak resident bytes) of an actor's process so far (Linux reports KiB)."""
    def read(_):
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime, own.ru_maxrss * 1024
    return ray.get(worker.__ray_call__.remote(read))


def measure(count: int, inputs: tuple, shard_size: int) -> tuple[dict, np.ndarray]:
    """Explain the images on a local Ray of count workers; return (its figures, the values).

    inputs: ((weights path, its bytes), background, images, classes), as the stage puts them in the object store.
    """
    images = len(inputs[2])
    start = time.perf_counter()
    connect("", count)
    try:
        shared = [ray.put(value) for value in inputs]
        workers = [RayWorker.remote() for _ in range(count)]
        ray.get([worker.explain.remote(shared, SETTINGS, 0, 1) for worker in workers])  # untimed warm-up
        cpu_before = sum(usage(worker)[0] for worker in workers)
        ready = time.perf_counter()
        pool = ActorPool(workers)
        values = np.zeros((images, 28, 28, 1, 2), dtype=np.float32)
        for first, shard in pool.map_unordered(lambda worker, bounds: worker.explain.remote(shared, SETTINGS, *bounds),
                                               shard_bounds(images, shard_size)):
            values[first : first + len(shard)] = shard
        seconds = time.perf_counter() - ready
        after = [usage(worker) for worker in workers]
    finally:
        ray.shutdown()
    cpu = sum(cpu_seconds for cpu_seconds, _ in after) - cpu_before
    return {"workers": count, "startup": ready - start, "seconds": seconds, "rate": images / seconds,
            "cpu": cpu, "cpu_rate": images / cpu, "peak": max(peak for _, peak in after)}, values


def table(rows: list[dict], images: int) -> str:
    header = ("| workers | images | time (s) | images per second | scaling efficiency | workers' CPU time (s) "
              "| images per CPU second | CPU efficiency | Ray and workers' startup (s) | peak memory per worker (GB) |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['workers']} | {images} | {row['seconds']:.1f} | {row['rate']:.2f} "
            f"| {row['rate'] / (row['workers'] * rows[0]['rate']):.2f} | {row['cpu']:.1f} | {row['cpu_rate']:.2f} "
            f"| {row['cpu_rate'] / rows[0]['cpu_rate']:.2f} | {row['startup']:.1f} | {row['peak'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def predictions(rows: list[dict], key: str) -> str:
    """Return the throughput at PREDICTED_CORES if each core adds what the last row's workers added on average.

    key: "rate" (wall clock) or "cpu_rate" (per CPU second, what a worker with a core of its own would do).
    """
    efficiency = rows[-1][key] / (rows[-1]["workers"] * rows[0][key]) if key == "rate" else rows[-1][key] / rows[0][key]
    return ", ".join(f"{cores} cores {cores * efficiency * rows[0][key]:.0f} images/s" for cores in PREDICTED_CORES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.weights.h5")
    parser.add_argument("--background", default="data/background.npy")
    parser.add_argument("--test", default="data/test")
    parser.add_argument("--images", type=int, default=128, help="misclassified test images, the first ones")
    parser.add_argument("--background-size", type=int, default=1000)  # params.yaml's mistakes.background_size
    parser.add_argument("--shard-size", type=int, default=16)  # params.yaml's mistakes.shard_size
    parser.add_argument("--output", default="benchmarks/mistakes_results.md")
    args = parser.parse_args()

    model = load_model(args.model)
    x_test, y_test = load_split(args.test)
    indices, classes = find_mistakes(model.predict(x_test, verbose=0).argmax(axis=1), y_test)
    indices, classes = indices[: args.images], classes[: args.images]
    background = np.load(args.background)[: args.background_size]
    load = os.getloadavg()[0]

    rows, results = [], []
    for count in WORKERS:
        row, values = measure(count, (model_file(args.model), background, x_test[indices], classes), args.shard_size)
        rows.append(row)
        results.append(values)
        print(f"{count} workers: {row['rate']:.2f} images/s, {row['cpu_rate']:.2f} images per CPU second, "
              f"peak {row['peak'] / 1e9:.2f} GB per worker", flush=True)
    assert all(np.array_equal(values, results[0]) for values in results), "the worker counts gave different bytes"

    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    report = (
        f"# The mistakes stage on Ray, measured {date.today().isoformat()}\n\n"
        f"`python benchmarks/mistakes_ray.py` on {machine}, load average {load:.1f} when it started{NOISY if load >= 1 else ''}.\n"
        f"The first {len(indices)} misclassified test images against\n"
        f"{len(background)} background images, shards of {args.shard_size}, a local Ray with 1 then 2 workers (one\n"
        f"thread each), the same bytes from both. Time of the shards alone, after each worker explained one\n"
        f"image untimed; startup is Ray's start, the workers' and that image.\n\n"
        f"{table(rows, len(indices))}\n\n"
        f"The scaling efficiency is the throughput with n workers over n times that with one; the CPU\n"
        f"efficiency, the same per CPU second the workers used, leaves out the cores that other processes\n"
        f"took. If each further core adds what the workers here added on average, by the clock:\n"
        f"{predictions(rows, 'rate')}; by CPU time, with a core for each worker: {predictions(rows, 'cpu_rate')}.\n"
    )
    print(report)
    Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
