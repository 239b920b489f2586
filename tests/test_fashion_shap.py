"""fashion_shap's import-time settings: in force in every stage process, and Keras and TensorFlow without the
optional imports the pipeline never calls."""

import os
import subprocess
import sys
import types

import pytest
from conftest import ROOT

from fashion_shap import REFUSED, OptionalImportsRefused

# Run in a fresh process: which modules a stage's imports load, and in what order.
PROBE = """
import sys
import stages.evaluate
loaded = list(sys.modules)
print(" ".join(name for name in ("fashion_shap", "numpy", "tensorflow", "keras") if name in loaded),
      loaded.index("fashion_shap") < min(loaded.index(name) for name in ("numpy", "tensorflow", "keras")))
print(" ".join(name for name in ("sklearn", "pandas", "matplotlib", "jax") if name in sys.modules) or "none")
import keras
print(keras.backend.backend())
import matplotlib.pyplot, pandas, sklearn, jax  # they still import for the code that wants them
print("imported")
"""


def find_spec_from(module: str, name: str):
    """Call the finder as an import made by code of the named module would: from a function of that module's globals."""
    finder = OptionalImportsRefused()

    def call():
        return finder.find_spec(name, None)

    return types.FunctionType(call.__code__, {"__name__": module}, "call", None, call.__closure__)()


def test_keras_and_tensorflow_alone_are_refused_their_optional_imports_and_every_other_import_passes():
    for package, refused in REFUSED.items():
        for name in refused:
            with pytest.raises(ModuleNotFoundError, match=name):
                find_spec_from(f"{package}.src.module", f"{name}.part")
            assert find_spec_from("shap.plots", f"{name}.part") is None  # not theirs: left to the other finders
            assert find_spec_from(f"{package}fake", name) is None
        assert find_spec_from(f"{package}.src.module", "numpy") is None
    assert find_spec_from("tensorflow.lite.python.util", "pandas") is None  # refused to Keras only


@pytest.mark.slow
def test_a_stage_loads_the_settings_first_keras_on_tensorflow_without_its_extras_and_tensorflow_quietly():
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    env["KERAS_BACKEND"] = "jax"  # a user's choice for other work: the pipeline's Keras stays on TensorFlow
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    order, extras, backend, imported = result.stdout.split("\n")[:4]
    assert order == "fashion_shap numpy tensorflow keras True"
    assert extras == "none"
    assert backend == "tensorflow"
    assert imported == "imported"
    assert "cpu_feature_guard" not in result.stderr  # TensorFlow's start-up chatter, quiet at TF_CPP_MIN_LOG_LEVEL 2

