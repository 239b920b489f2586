"""Benchmark the accelerated engine (deepshap.accelerated, JAX) against the CPU engine (deepshap.Explainer).

Explains the first test image of each class with the pipeline's model (read from its weights file, so
that the accelerated engine needs no TensorFlow) against seeded samples of the training set, one
background size at a time, each engine in a child process of its own so that its peak memory is its
own. Prints a markdown table: time, peak memory, the CPU engine's time over this one, and the largest
difference to the CPU engine's values over their largest magnitude.

The CPU engine's values and times are read from --cpu-values (cpu-HEAD-SIZE.npy and .json) where
they are; else, where TensorFlow is installed, the CPU engine runs and writes them there (or to a
temporary folder); else its columns stay empty. On a GPU machine without TensorFlow:

    python benchmarks/accelerated.py --weights models/model.weights.h5 --data data/ --sizes 100 1000 5000 60000 \\
        --cpu-values benchmarks/cpu-values

with benchmarks/cpu-values written beforehand, where TensorFlow is, by the same command with --engines cpu.
"""

import os

# As the pipeline runs the CPU engine: OpenBLAS's threads spin after each product otherwise (read when NumPy loads).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CPU_CHUNK_SIZE = 100  # params.yaml's explain.chunk_size, the CPU engine's references per step
SEED = 0  # the background samples, as benchmarks/explain_engines.py draws them


def explained_images(data: Path) -> np.ndarray:
    """Return the first test image of each class, in class order, (classes, 28, 28, 1) float32."""
    x_test, y_test = np.load(data / "test" / "x.npy"), np.load(data / "test" / "y.npy")
    return x_test[[np.flatnonzero(y_test == label)[0] for label in np.unique(y_test)]]


def background_of(data: Path, size: int) -> np.ndarray:
    """Return a seeded sample of training images; every size draws from the same permutation; 0 or all: all."""
    x_train = np.load(data / "train" / "x.npy", mmap_mode="r")  # read a chunk at a time
    if size in (0, len(x_train)):
        return x_train
    return x_train[np.sort(np.random.default_rng(SEED).permutation(len(x_train))[:size])]


def explain(engine: str, head: str, weights: str, images: np.ndarray, background: np.ndarray
            ) -> tuple[np.ndarray, dict]:
    """Return the values and {seconds, first_seconds, device}; the accelerated engine's time is that of a
    second run (its first one compiles, reported apart), the CPU engine's that of its one run."""
    rule = {"output": "logit"} if head == "logit" else {"output": "probability", "softmax_rule": head}
    if engine == "cpu":
        from deepshap import Explainer
        from fashion_shap.model import load_model

        explainer = Explainer(load_model(weights), chunk_size=CPU_CHUNK_SIZE, **rule)
        start = time.perf_counter()
        values = explainer.shap_values(images, background)
        return values, {"seconds": time.perf_counter() - start, "device": f"{os.cpu_count()} CPU cores"}
    import jax

    from deepshap.accelerated import AcceleratedExplainer, layers_from_weights_file

    explainer = AcceleratedExplainer(layers_from_weights_file(weights), **rule)
    _, chunk = explainer.plan(images.shape[1:], len(images), len(background), explainer.num_classes)
    start = time.perf_counter()
    explainer.shap_values(images, background[:chunk])  # the same step shapes as the run: compiles them
    first = time.perf_counter() - start
    start = time.perf_counter()
    values = explainer.shap_values(images, background)
    seconds = time.perf_counter() - start
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    return values, {"seconds": seconds, "first_seconds": first, "device_peak_bytes": stats.get("peak_bytes_in_use"),
                    "device": f"{device.device_kind} (JAX {jax.__version__})"}


def run_case(engine: str, head: str, size: int, weights: str, data: Path, out: Path) -> None:
    """In the child: explain one case; save the values to out.npy and the figures to out.json."""
    values, figures = explain(engine, head, weights, explained_images(data), background_of(data, size))
    figures["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    np.save(out.with_suffix(".npy"), values)
    out.with_suffix(".json").write_text(json.dumps(figures))


def measure(engine: str, size: int, args: argparse.Namespace, out: Path) -> dict:
    """Run one case in a child process and return its figures."""
    command = [sys.executable, __file__, "--case", engine, str(size), str(out), "--weights", args.weights,
               "--data", str(args.data), "--head", args.head]
    subprocess.run(command, check=True)
    return json.loads(out.with_suffix(".json").read_text())


def cpu_figures(size: int, args: argparse.Namespace, folder: Path) -> dict | None:
    """Return the CPU engine's figures for size (its values in folder/cpu-HEAD-SIZE.npy): read, or run where
    TensorFlow is; None where neither."""
    out = folder / f"cpu-{args.head}-{size}"
    if out.with_suffix(".json").exists():
        return json.loads(out.with_suffix(".json").read_text())
    if importlib.util.find_spec("tensorflow") is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return measure("cpu", size, args, out)


def table(rows: list[dict]) -> str:
    lines = [
        ("| background | engine | device | time (s) | compiling + one chunk (s) | peak host memory (GB) "
         "| peak device memory (GB) | CPU engine time / time | max difference to the CPU engine / largest value |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        first = f"{row['first_seconds']:.1f}" if "first_seconds" in row else ""
        device_peak = f"{row['device_peak_bytes'] / 1e9:.2f}" if row.get("device_peak_bytes") else ""
        lines.append(f"| {row['size']:,} | {row['engine']} | {row['device']} | {row['seconds']:.1f} | {first} | "
                     f"{row['peak_bytes'] / 1e9:.2f} | {device_peak} | {row.get('ratio', '')} | "
                     f"{row.get('difference', '')} |")
    return "\n".join(lines)


def compare(size: int, args: argparse.Namespace, scratch: Path, cpu_folder: Path) -> list[dict]:
    """Return the table's rows for one background size: the CPU engine's, if any, and the accelerated one's."""
    rows = []
    cpu = cpu_figures(size, args, cpu_folder) if "cpu" in args.engines else None
    if cpu is not None:
        rows.append(dict(cpu, engine="cpu", size=size))
    if "accelerated" not in args.engines:
        return rows
    accelerated = measure("accelerated", size, args, scratch / f"accelerated-{size}")
    accelerated.update(engine="accelerated", size=size)
    if cpu is not None:
        expected = np.load(cpu_folder / f"cpu-{args.head}-{size}.npy")
        difference = np.abs(np.load(scratch / f"accelerated-{size}.npy") - expected).max() / np.abs(expected).max()
        accelerated.update(ratio=f"{cpu['seconds'] / accelerated['seconds']:.1f}x", difference=f"{difference:.1e}")
    return rows + [accelerated]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="models/model.weights.h5", help="the train stage's weights file")
    parser.add_argument("--data", type=Path, default=Path("data"), help="holds the preprocessed train/ and test/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="background sizes; 0: all")
    parser.add_argument("--head", choices=("shap", "shapley", "logit"), default="shap",
                        help="the softmax's rule (shap, shapley) or the logits (logit)")
    parser.add_argument("--cpu-values", type=Path, help="the CPU engine's values and times, read or written")
    parser.add_argument("--engines", nargs="+", choices=("cpu", "accelerated"), default=["cpu", "accelerated"])
    parser.add_argument("--case", nargs=3, metavar=("ENGINE", "SIZE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args.case[0], args.head, int(args.case[1]), args.weights, args.data, Path(args.case[2]))
        return
    train_size = len(np.load(args.data / "train" / "y.npy", mmap_mode="r"))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            rows += compare(size, args, Path(scratch), args.cpu_values or Path(scratch))
            print(f"{size or train_size:>6}: {rows[-1]['seconds']:.1f} s" if rows else f"{size}: no engine ran",
                  file=sys.stderr, flush=True)
    for row in rows:
        row["size"] = row["size"] or train_size
    machine = (f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
               f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"# Accelerated engine, measured {date.today().isoformat()}\n\n"
          f"`python benchmarks/accelerated.py {' '.join(sys.argv[1:])}` on {machine}: the first test image of each\n"
          f"class against seeded training samples, head: {args.head}; time of the explanation alone (the\n"
          f"accelerated engine's second run; its first compiles), peak memory of each engine's whole process,\n"
          f"the CPU engine in chunks of {CPU_CHUNK_SIZE}, the accelerated one in chunks sized to the device's\n"
          f"memory. shap's softmax rule divides by each logit's change: where a logit barely moves between an\n"
          f"image and a reference, the forward pass's last bit, which TensorFlow and XLA round differently,\n"
          f"moves its values (deepshap/accelerated.py); the Shapley rule and the logits have no such division.\n\n"
          f"{table(rows)}")


if __name__ == "__main__":
    main()
