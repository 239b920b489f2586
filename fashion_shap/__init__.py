"""fashion_shap: the code the pipeline's stages share; each stage is a thin script in stages/.

- params: params.yaml's values, checked, and the one-line errors a user can act on.
- data: the IDX files, the preprocessed splits and the class names.
- files: writes that never leave a half-written output (write to a temporary path, then rename).
- model: the CNN of params.yaml's model section, and its weights file.
- engines: the one place that picks an explanation engine (explain.engine).
- readings: what the lab reads off SHAP values.
- figures: the lab's colours and overlay, and saving a figure.
- trust, mistakes: the checks of the trust stage and the parts of the mistakes stage, one module each.

Importing it sets the pipeline's import-time settings, below, and refuses Keras and TensorFlow the optional
imports the pipeline never calls (REFUSED): every stage imports it first, through the stages package.

The attribution rules live apart, in the deepshap package, which knows nothing of DVC or files.
"""

import os

# The pipeline's import-time settings, here alone, before any stage loads NumPy, TensorFlow or
# matplotlib. OpenBLAS's threads spin for a while after each matrix product, keeping the cores from
# the engine's compiled loop and TensorFlow in between (measured: that loop ran 2.4x slower); read
# once, when NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise in a pipeline's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No cap on oneDNN's vector instructions (ONEDNN_MAX_CPU_ISA): its kernels add in other orders at each ISA, so the
# trained weights' bytes follow the CPU. Measured, the lab's training: AVX-512 machines of both vendors (an Intel
# Xeon, AMD EPYC Zen 4) train the same bytes; capped at AVX2 the Intel trains others, and slower (97 s against 82 s),
# and still not an AVX2-only Zen 2's. README: "Reproducible to the byte".
# Figures go to files only: no screen, whatever the user's matplotlib default.
os.environ.setdefault("MPLBACKEND", "Agg")
# Keras on TensorFlow, whatever KERAS_BACKEND or ~/.keras/keras.json say: the engine runs TensorFlow's ops on the
# model's layers, and the outputs' bytes are TensorFlow's (measured: under KERAS_BACKEND=jax the explain stage ran
# and wrote other bytes than dvc.lock's).
os.environ["KERAS_BACKEND"] = "tensorflow"

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from types import ModuleType

# What Keras and TensorFlow import where it is installed, for parts the pipeline never calls: Keras' scikit-learn
# wrappers, pandas inputs, image galleries, notebook display and JAX checkpoints; TensorFlow Lite's JAX converter.
# (shap needs scikit-learn and pandas, the figures matplotlib, the accelerated engine JAX.) Refused to Keras and
# TensorFlow alone, a process that loads Keras starts 0.8-1.4 s sooner, 2.2-2.9 s where JAX and IPython are installed
# too (measured: `import keras` 4.2-5.1 s -> 2.8-4.3 s in a venv of setup.sh, 4.9-6.2 s -> 2.6-4.0 s with the tests'
# packages); any other code imports them as usual. In any process that imports fashion_shap before Keras (a notebook
# too), Keras then lacks those parts: its SKLearnClassifier, say, reports scikit-learn as not installed.
REFUSED = {"keras": ("sklearn", "pandas", "matplotlib", "IPython", "jax"), "tensorflow": ("jax",)}


class OptionalImportsRefused(MetaPathFinder):
    """Fails an import of a REFUSED package that code of the package it is refused to makes; passes any other."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        package = name.partition(".")[0]
        if any(package in refused for refused in REFUSED.values()):
            importing = importer().partition(".")[0]
            if package in REFUSED.get(importing, ()):
                raise ModuleNotFoundError(f"{name} is not for {importing} here (fashion_shap.REFUSED)", name=name)


def importer() -> str:
    """Return the name of the module whose code runs the import in progress (the first frame below importlib's)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    return "" if frame is None else frame.f_globals.get("__name__", "")


sys.meta_path.insert(0, OptionalImportsRefused())
