"""The engine's bytes do not depend on the machine: BLAS kernel, oneDNN's, numba's threads and vector width.

Each case runs in a fresh process, as a pipeline stage does on another machine, with the knob set
before NumPy and numba load. The forward pass's Dense and Conv2D are float64 (OpenBLAS's, which the
knob varies, and Eigen's), rounded once; the rest of it is TensorFlow's float32 ops, on oneDNN.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from fashion_shap.model import build_model, save_weights

CASE = """
import hashlib, json, sys
import deepshap, numpy as np
from threadpoolctl import threadpool_info
from fashion_shap.model import load_model
model = load_model(sys.argv[1])
background, images = np.load(sys.argv[2]), np.load(sys.argv[3])
digests = {}
for output, rule in (("probability", "shap"), ("probability", "shapley"), ("logit", "shap")):
    explainer = deepshap.Explainer(model, output=output, softmax_rule=rule, chunk_size=8)
    values = explainer.shap_values(images, background)
    expected = explainer.expected_value(background)
    digests[f"{output}/{rule}"] = hashlib.md5(values.tobytes() + expected.tobytes()).hexdigest()
blas = [pool.get("architecture") for pool in threadpool_info() if pool["internal_api"] == "openblas"]
print(json.dumps({"digests": digests, "blas": blas}))
"""


def has_avx512() -> bool:
    return "avx512f" in Path("/proc/cpuinfo").read_text()


def generic_cache() -> Path:
    """numba's cache for the generic CPU's loops, kept between runs like the host's (~/.cache/numba), but in a
    folder of its own: numba numbers a loop's code files in the order they are saved, so a host process and a
    generic one saving the same loop at once could leave the one's code under the other's key."""
    return Path.home() / ".cache" / "numba-generic-cpu"


def start_case(environment: dict, tmp_path: Path) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], "TF_CPP_MIN_LOG_LEVEL": "2", **environment}
    args = [str(tmp_path / name) for name in ("model.weights.h5", "background.npy", "images.npy")]
    return subprocess.Popen([sys.executable, "-c", CASE, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def case_result(process: subprocess.Popen) -> dict:
    """Return the case's digests and OpenBLAS's kernel, and the ISA oneDNN names where ONEDNN_VERBOSE is set."""
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    lines = stdout.strip().splitlines()
    isa = [line.rpartition(",isa:")[2] for line in lines if line.startswith("onednn_verbose") and ",isa:" in line]
    return {**json.loads(lines[-1]), "isa": isa[:1]}


@pytest.mark.slow
def test_bytes_do_not_depend_on_blas_or_onednn_kernels_numba_threads_or_vector_width(tmp_path):
    architecture = {"conv_filters": [8, 8], "kernel_size": 3, "pool_size": 2, "padding": "valid",
                    "dense_units": [64], "dropout": 0.0, "batch_norm": False}
    keras.utils.set_random_seed(0)
    save_weights(build_model(**architecture), tmp_path / "model.weights.h5", architecture)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "background.npy", rng.random((40, 28, 28, 1), dtype=np.float32))
    np.save(tmp_path / "images.npy", rng.random((3, 28, 28, 1), dtype=np.float32))

    # Each process changes one BLAS kernel and one numba setting at a time, to keep the test short; the first runs
    # TensorFlow's oneDNN at AVX, whose kernels are another family than the host's AVX2 or AVX-512 ones. The
    # first two load the host's loops from the shared cache, as a stage does; the third runs loops compiled
    # for a CPU with no vector instructions beyond SSE2, and so with the 8-lane register blocks (deepshap.kernels.
    # VECTOR) where the host has AVX-512's 16 lanes.
    cases = [
        {"OPENBLAS_CORETYPE": "Haswell", "NUMBA_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX", "ONEDNN_VERBOSE": "1"},
        {"OPENBLAS_CORETYPE": "SkylakeX" if has_avx512() else "Sandybridge", "NUMBA_NUM_THREADS": "2"},
        {"OPENBLAS_CORETYPE": "Sandybridge", "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(generic_cache())},
    ]
    # The third, which compiles its loops where its cache is empty (some 35 s of CPU), runs beside the first two,
    # one after the other: the first fills the shared cache where it is empty (a fresh machine), and the second
    # loads from it.
    third = start_case(cases[2], tmp_path)
    try:
        results = [case_result(start_case(environment, tmp_path)) for environment in cases[:2]] + [case_result(third)]
    finally:
        third.kill()  # if a case failed first (a process that has ended is left as it is)
    # The knobs took effect: OpenBLAS ran the kernels asked for.
    assert [result["blas"][0] for result in results] == [case["OPENBLAS_CORETYPE"] for case in cases]
    assert results[0]["isa"] == ["Intel AVX"]  # oneDNN's own line: it ran at AVX
    first = results[0]["digests"]
    assert len(set(first.values())) == 3  # the three rules give different values
    for environment, result in zip(cases, results):
        assert result["digests"] == first, environment
