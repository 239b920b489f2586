"""Benchmark the explain engines: time, peak memory, agreement with shap, for two models and three head rules.

Runs shap.DeepExplainer ("shap"), this project's CPU engine ("fast", deepshap.Explainer) and its JAX engine
("accelerated", deepshap.accelerated: on a GPU where JAX finds one, else on the CPU) on the same images
and backgrounds, each case in a child process of its own so that its peak memory is its own:
- the pipeline's model (the lab's CNN, trained by `dvc repro`): both engines at 100, 1,000 and 5,000
  background images, the fast engine also on the whole training set, and at 5,000 the fast engine's
  two other heads (the exact Shapley softmax rule, and the logits);
- a model with two conv blocks (32 and 64 filters) and a Dense of 128, trained here for one epoch on
  10,000 training images: both engines at 1,000, the fast engine on the whole training set.
- the accelerated engine on the lab's model at 100 and 1,000 (on a CPU it is slower than fast: its place is
  a GPU; benchmarks/accelerated.py measures it there without TensorFlow).
Prints a table and writes it to benchmarks/explain_engines.md. Needs the pipeline's outputs (`dvc repro`):

    python benchmarks/explain_engines.py
"""

import fashion_shap  # noqa: F401, I001  first: it tunes OpenBLAS before NumPy loads it, as in the pipeline

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

from fashion_shap.data import first_of_each_class, load_split
from fashion_shap.engines import make_explainer
from fashion_shap.model import build_model, load_model, save_weights
from fashion_shap.readings import additivity_error

CHUNK_SIZE = 100  # params.yaml's explain.chunk_size
FAST_REPEATS = 3  # runs of each fast case short of the whole training set, the fastest kept: they vary ~10 %
SEED = 0
TWO_BLOCKS = {"conv_filters": [32, 64], "kernel_size": 3, "pool_size": 2, "padding": "valid", "dense_units": [128],
              "dropout": 0.0, "batch_norm": False}
# (model, engine, background size, output, softmax rule); size 0 is the whole training set.
CASES = [
    ("lab", "shap", 100, "probability", "shap"), ("lab", "fast", 100, "probability", "shap"),
    ("lab", "shap", 1000, "probability", "shap"), ("lab", "fast", 1000, "probability", "shap"),
    ("lab", "shap", 5000, "probability", "shap"), ("lab", "fast", 5000, "probability", "shap"),
    ("lab", "fast", 5000, "probability", "shapley"), ("lab", "fast", 5000, "logit", "shap"),
    ("lab", "fast", 0, "probability", "shap"),
    ("two blocks", "shap", 1000, "probability", "shap"), ("two blocks", "fast", 1000, "probability", "shap"),
    ("two blocks", "fast", 0, "probability", "shap"),
    ("lab", "accelerated", 100, "probability", "shap"), ("lab", "accelerated", 1000, "probability", "shap"),
]


def background_of(x_train: np.ndarray, size: int) -> np.ndarray:
    """Return a seeded sample of training images; every size of the run draws from the same permutation."""
    if size in (0, len(x_train)):
        return x_train
    return x_train[np.sort(np.random.default_rng(SEED).permutation(len(x_train))[:size])]


def run_case(args: argparse.Namespace) -> None:
    """In the child: explain one case; save the values, print the figures as JSON."""
    model = load_model(args.model)
    x_train = np.load(Path(args.train) / "x.npy", mmap_mode="r")  # read a chunk at a time, as explain reads
    x_test, y_test = load_split(args.test)
    images = first_of_each_class(x_test, y_test)
    background = background_of(x_train, args.size)
    explainer = make_explainer(model, args.engine, args.output, args.rule, CHUNK_SIZE)
    start = time.perf_counter()
    values = explainer.shap_values(images, background)
    seconds = time.perf_counter() - start
    error = additivity_error(values, explainer.predict(images), explainer.expected_value(background))
    np.save(args.values, values)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "additivity_error": error}))


def measure(args: argparse.Namespace, case: tuple, model_path: Path, values_path: Path, repeats: int = 1) -> dict:
    """Run one case in a child process, repeats times, and return the figures of the fastest run."""
    _, engine, size, output, rule = case
    command = [
        sys.executable, __file__, "--case", engine, str(size), output, rule, str(values_path),
        "--model", str(model_path), "--train", args.train, "--test", args.test,
    ]
    runs = [json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(repeats)]
    return min(runs, key=lambda run: run["seconds"])


def train_two_blocks(train_dir: str, path: Path) -> None:
    """Train the two-block model for one epoch on 10,000 training images (enough for realistic activations)."""
    import keras

    keras.utils.set_random_seed(SEED)
    model = build_model(**TWO_BLOCKS)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x_train, y_train = load_split(train_dir)
    model.fit(x_train[:10000], y_train[:10000], epochs=1, batch_size=32, verbose=0)
    save_weights(model, path, TWO_BLOCKS)


def table(rows: list[dict]) -> str:
    lines = [
        "| model | background | engine | head | time (s) | peak memory (GB) | time / fast shap-rule time "
        "| shap time / fast time | max difference to shap | additivity error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        head = row["output"] if row["output"] == "logit" else f"softmax, {row['rule']} rule"
        lines.append(
            f"| {row['model']} | {row['size']:,} | {row['engine']} | {head} | {row['seconds']:.1f} | "
            f"{row['peak_bytes'] / 1e9:.2f} | {row.get('head_ratio', '')} | {row.get('ratio', '')} | "
            f"{row.get('difference', '')} | {row['additivity_error']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.weights.h5")
    parser.add_argument("--train", default="data/train")
    parser.add_argument("--test", default="data/test")
    parser.add_argument("--output", default="benchmarks/explain_engines.md")
    parser.add_argument("--case", nargs=5, metavar=("ENGINE", "SIZE", "OUTPUT", "RULE", "VALUES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        args.engine, args.size, args.output, args.rule, args.values = args.case
        args.size = int(args.size)
        run_case(args)
        return

    train_size = len(np.load(Path(args.train) / "y.npy"))
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        models = {"lab": Path(args.model), "two blocks": Path(scratch) / "two-blocks.weights.h5"}
        train_two_blocks(args.train, models["two blocks"])
        # Untimed: the first run on a machine compiles the fast engine's loops into __pycache__;
        # every later run, the pipeline's included, loads them from there.
        for model in models.values():
            for rule in ("shap", "shapley"):
                measure(args, ("", "fast", 10, "probability", rule), model, Path(scratch) / "warm-up.npy")
        for case in CASES:
            name, engine, size, output, rule = case
            path = Path(scratch) / f"{'-'.join(map(str, case)).replace(' ', '_')}.npy"
            repeats = FAST_REPEATS if engine == "fast" and size else 1
            row = rows[case] = {"model": name, "engine": engine, "size": size or train_size, "output": output,
                                "rule": rule, "path": path, **measure(args, case, models[name], path, repeats)}
            print(f"{name:>10} {size or train_size:>6} {engine} {output} {rule}: {row['seconds']:.1f} s", flush=True)
            reference = rows.get((name, "shap", size, output, rule))
            if engine != "shap" and reference:
                difference = np.abs(np.load(path) - np.load(reference["path"])).max()
                row["difference"] = f"{difference:.1e}"
                row["ratio"] = f"{reference['seconds'] / row['seconds']:.1f}x"
            baseline = rows.get((name, "fast", size, "probability", "shap"))
            if engine == "fast" and (output, rule) != ("probability", "shap") and baseline:
                row["head_ratio"] = f"{row['seconds'] / baseline['seconds']:.2f}"

    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    report = (
        f"# Explain engines, measured {date.today().isoformat()}\n\n"
        f"`python benchmarks/explain_engines.py` on {machine}: 10 images (the first test image of each\n"
        f"class), backgrounds sampled from the training set; time of the explanation alone, peak memory of\n"
        f"the whole process (TensorFlow included), chunks of {CHUNK_SIZE} background images. The lab's model is\n"
        f"the pipeline's; the two-block model (conv 32, conv 64, dense 128) was trained here for one epoch.\n"
        f"The fast engine's compiled loops were cached beforehand; each of its cases short of the whole\n"
        f"training set ran {FAST_REPEATS} times, the fastest shown (shap's ran once).\n\n"
        f"{table(list(rows.values()))}\n"
    )
    print(report)
    Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
