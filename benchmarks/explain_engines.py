"""Benchmark the explain stage's two engines on the pipeline's model: time, peak memory, agreement.

Runs shap.DeepExplainer ("shap") and this project's engine ("fast") on the same model, images and
backgrounds, each case in a child process of its own so that its peak memory is its own; the fast
engine alone also takes the whole training set as background, which shap cannot hold here.
Prints a table and writes it to benchmarks/results.md. Needs the pipeline's outputs (`dvc repro`):

    python benchmarks/explain_engines.py
"""

import stages  # noqa: F401  first: it tunes OpenBLAS before NumPy loads it, as in the pipeline

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from stages.common import first_of_each_class, load_split
from stages.explain import additivity_error, explain, mean_prediction
from stages.model import load_model

SIZES = (100, 1000, 5000)
CHUNK_SIZE = 100  # params.yaml's explain.chunk_size
SEED = 0


def background_of(x_train: np.ndarray, size: int) -> np.ndarray:
    """Return a seeded sample of training images; every size of the run draws from the same permutation."""
    if size == len(x_train):
        return x_train
    return x_train[np.sort(np.random.default_rng(SEED).permutation(len(x_train))[:size])]


def run_case(args: argparse.Namespace) -> None:
    """In the child: explain with one engine and background size; save the values, print the figures as JSON."""
    model = load_model(args.model)
    x_train = np.load(Path(args.train) / "x.npy", mmap_mode="r")  # read a chunk at a time, as explain reads
    x_test, y_test = load_split(args.test)
    images = first_of_each_class(x_test, y_test)
    background = background_of(x_train, args.size)
    start = time.perf_counter()
    values = explain(model, background, images, args.engine, CHUNK_SIZE)
    seconds = time.perf_counter() - start
    expected = mean_prediction(model, background, CHUNK_SIZE)
    error = additivity_error(values, model.predict(images, verbose=0), expected)
    np.save(args.values, values)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "additivity_error": error}))


def measure(args: argparse.Namespace, engine: str, size: int, values_path: Path) -> dict:
    """Run one case in a child process and return its figures."""
    command = [
        sys.executable, __file__, "--case", engine, str(size), str(values_path),
        "--model", args.model, "--train", args.train, "--test", args.test,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| background | engine | time (s) | peak memory (GB) | shap time / fast time | max difference to shap | additivity error |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']:,} | {row['engine']} | {row['seconds']:.1f} | {row['peak_bytes'] / 1e9:.2f} | "
            f"{row.get('ratio', '')} | {row.get('difference', '')} | {row['additivity_error']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.weights.h5")
    parser.add_argument("--train", default="data/train")
    parser.add_argument("--test", default="data/test")
    parser.add_argument("--output", default="benchmarks/results.md")
    parser.add_argument("--case", nargs=3, metavar=("ENGINE", "SIZE", "VALUES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        args.engine, args.size, args.values = args.case[0], int(args.case[1]), args.case[2]
        run_case(args)
        return

    train_size = len(np.load(Path(args.train) / "y.npy"))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        # Untimed: the first run on a machine compiles the fast engine's loop (about 6 s) into
        # __pycache__; every later run, the pipeline's included, loads it from there.
        measure(args, "fast", 10, Path(scratch) / "warm-up.npy")
        for size in SIZES + (train_size,):
            engines = ("shap", "fast") if size in SIZES else ("fast",)
            found = {}
            for engine in engines:
                path = Path(scratch) / f"{engine}-{size}.npy"
                found[engine] = {"size": size, "engine": engine, **measure(args, engine, size, path)}
                print(f"{size:>6} {engine}: {found[engine]['seconds']:.1f} s", flush=True)
            if "shap" in found:
                fast, reference = (np.load(Path(scratch) / f"{e}-{size}.npy") for e in ("fast", "shap"))
                found["fast"]["difference"] = f"{np.abs(fast - reference).max():.1e}"
                found["fast"]["ratio"] = f"{found['shap']['seconds'] / found['fast']['seconds']:.1f}x"
            rows.extend(found.values())

    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    report = (
        f"# Explain engines, measured {date.today().isoformat()}\n\n"
        f"`python benchmarks/explain_engines.py` on {machine}: the pipeline's model, its 10 explained\n"
        f"images, backgrounds sampled from the training set; time of the explanation alone, peak\n"
        f"memory of the whole process (TensorFlow included), chunks of {CHUNK_SIZE} background images.\n"
        f"The fast engine's compiled loop was cached beforehand; compiling it the first time takes about 6 s.\n\n"
        f"{table(rows)}\n"
    )
    print(report)
    Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
