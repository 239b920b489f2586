"""Benchmark the whole pipeline: each stage's seconds and peak memory from scratch, then an epochs experiment.

In a temporary `git clone` of the repository (its last commit: uncommitted changes are not measured),
on the real data:
1. every stage of dvc.yaml, in its order, by `dvc repro --force --single-item <stage>`, as a user runs it
   (each run's time includes DVC's own start and the hashing of the stage's outputs);
2. `dvc repro`, which then has nothing to do;
3. `dvc exp run --temp -n epochs-<n> -S train.epochs=<n>` (n: epochs - 2): train and everything after it,
   in a copy of the workspace, timed whole and per stage, each stage from its "Running stage" line to
   the next (or to the end). The workspace keeps the committed params' outputs, and the experiment
   stays in the clone as epochs-<n>: with --workdir the clone is kept, to compare more experiments with.
Time is wall clock. Peak memory is the largest sum of the resident set sizes (RSS) of the dvc process
and all its descendants (the stage's Python, Ray's processes and workers), sampled every 0.2 s with
psutil: a spike shorter than that can be missed, and pages shared between processes (libraries, Ray's
object store) count once per process. RUSAGE_CHILDREN would not do: it gives the largest single
process, not the tree at one moment. Prints one markdown table and writes it to --out
(benchmarks/results.md):

    python benchmarks/pipeline.py

`--tiny` runs the same on the tests' tiny synthetic project (tests/conftest.py), built from the
working tree, to check this script in a few minutes; it writes a file only when --out is given.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 0.2  # between two readings of the process tree's memory
# Seconds on 2 cores, from issue #21.
TARGETS = {"train": 100, "trust": 60, "mistakes": 60, "all stages": 300, "epochs experiment": 240}


def tree_rss(root: psutil.Process) -> int:
    """Return the bytes resident in root and all its descendants now."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # it ended between the listing and the reading
            pass
    return total


def run_measured(command: list[str], cwd: Path) -> dict:
    """Run command in cwd; return its seconds and peak memory, whole and for each stage it ran."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # every line as it is printed, to time the stages
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, marks = [], [("", start)]  # (stage, when it started); "" is DVC's own work before the first

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Running stage"):
                marks.append((line.split("'")[1], time.perf_counter()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peaks, tree = {}, psutil.Process(process.pid)
    while process.poll() is None:
        stage = marks[-1][0]
        peaks[stage] = max(peaks.get(stage, 0), tree_rss(tree))
        time.sleep(SAMPLE_SECONDS)
    reader.join()
    end = time.perf_counter()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{''.join(lines[-40:])}")
    ends = [when for _, when in marks[1:]] + [end]
    stages = {name: {"seconds": stop - begin, "peak": peaks.get(name, 0)}
              for (name, begin), stop in zip(marks, ends) if name}
    return {"seconds": end - start, "peak": max(peaks.values(), default=0), "stages": stages}


def clone(repo: str, directory: Path) -> str:
    """Clone repo into directory; return a line naming what is measured."""
    subprocess.run(["git", "clone", "--quiet", repo, str(directory)], check=True)
    commit = git_output(directory, "log", "-1", "--format=%h (%cs) %s")
    if Path(repo).is_dir() and git_output(Path(repo), "status", "--porcelain", "--untracked-files=no"):
        print(f"note: {repo} has uncommitted changes; measuring its last commit", flush=True)
    return f"commit {commit}"


def tiny_project(directory: Path) -> str:
    """Build the tests' tiny git + DVC project in directory, from this working tree; return a line naming it."""
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers are no installed module
    import conftest

    raw = directory.parent / "raw"
    conftest.init_project(directory, (raw, conftest.write_raw_files(raw)))
    return "the tests' tiny synthetic project (tests/conftest.py), built from the working tree"


def git_output(directory: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()


def machine() -> str:
    """Return the CPU model, the cores this process may use, the memory and Python's version."""
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]
    cpu = models[0] if models else platform.machine()
    memory = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def measure(project: Path, epochs: int) -> list[tuple[str, float, int]]:
    """Run the sequence in project; return (row label, seconds, peak bytes) for each row of the table."""
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    rows = []
    for stage in stages:
        result = run_measured(["dvc", "repro", "--force", "--single-item", stage], project)
        rows.append((stage, result["seconds"], result["peak"]))
        print(f"{stage}: {result['seconds']:.1f} s, {result['peak'] / 1e9:.2f} GB", flush=True)
    # The lab alone: the stages up to visualize, the ones the original lab has.
    lab = rows[: stages.index("visualize") + 1]
    rows.append(("all stages", sum(row[1] for row in rows), max(row[2] for row in rows)))
    rows.append(("lab alone (fetch to visualize)", sum(row[1] for row in lab), max(row[2] for row in lab)))
    nothing = run_measured(["dvc", "repro"], project)
    rows.append(("`dvc repro`, nothing to do", nothing["seconds"], nothing["peak"]))
    experiment = run_measured(["dvc", "exp", "run", "--temp", "-n", f"epochs-{epochs}", "-S", f"train.epochs={epochs}"],
                              project)
    rows.append(("epochs experiment", experiment["seconds"], experiment["peak"]))
    print(f"epochs experiment: {experiment['seconds']:.1f} s", flush=True)
    rows += [(f"experiment: {name}", figures["seconds"], figures["peak"])
             for name, figures in experiment["stages"].items()]
    return rows


def table(rows: list[tuple[str, float, int]]) -> str:
    lines = ["| stage | seconds | peak memory (GB) | target (s, 2 cores) | met? |", "|---|---|---|---|---|"]
    for label, seconds, peak in rows:
        target = TARGETS.get(label)
        met = "" if target is None else ("yes" if seconds <= target else "no")
        lines.append(f"| {label} | {seconds:.1f} | {peak / 1e9:.2f} | {target or ''} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT), help="the repository to clone (default: this checkout)")
    parser.add_argument("--out", help="the file the table replaces (default: benchmarks/results.md; none with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny synthetic project instead of a clone")
    parser.add_argument("--epochs-experiment", type=int, help="train.epochs of the experiment (default: epochs - 2)")
    parser.add_argument("--workdir", type=Path, help="an empty folder to run in and keep (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or (None if args.tiny else ROOT / "benchmarks" / "results.md")

    with tempfile.TemporaryDirectory(prefix="pipeline-benchmark-") as scratch:
        project = args.workdir or Path(scratch) / "project"
        what = tiny_project(project) if args.tiny else clone(args.repo, project)
        epochs = yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"]
        experiment_epochs = args.epochs_experiment or (2 if args.tiny else epochs - 2)
        if experiment_epochs < 1 or experiment_epochs == epochs:
            raise ValueError(f"the experiment needs train.epochs >= 1 and other than {epochs}, not {experiment_epochs}")
        print(f"measuring {what} in {project}", flush=True)
        rows = measure(project, experiment_epochs)

    report = (
        f"# The pipeline, measured {date.today().isoformat()}\n\n"
        f"`python benchmarks/pipeline.py{' --tiny' if args.tiny else ''}` on {machine()}; {what}.\n"
        f"Each stage from scratch by `dvc repro --force --single-item <stage>` in a fresh copy, in dvc.yaml's\n"
        f"order; \"all stages\" is their sum, \"lab alone\" the sum up to visualize; then `dvc repro` with\n"
        f"nothing to do, and `dvc exp run -S train.epochs={experiment_epochs}` (train and all after it), whole and\n"
        f"per stage. Wall-clock seconds; peak memory: the largest sum of RSS over the dvc process and all its\n"
        f"descendants, Ray's included, sampled every {SAMPLE_SECONDS} s.\n\n"
        f"{table(rows)}\n"
    )
    print(report)
    if out:
        Path(out).write_text(report)


if __name__ == "__main__":
    main()
