"""The pipeline's stages: one script per stage of dvc.yaml, run as `python -m stages.<name>`.

The code they share lives in the fashion_shap package, the attribution rules in deepshap.
"""

import gc
import sys

# A stage started as `python -m stages.<name>` (sys.argv[0] is "-m" while Python imports this package) loads
# TensorFlow, Keras, numba and matplotlib before its main runs, and Python's cyclic garbage collector went over their
# new objects again and again: off until fashion_shap.params.run starts main (measured, 4 runs alternated:
# `import fashion_shap, stages.trust` 4.6-5.2 s with it, 3.6-3.9 s without; the stage's outputs the same bytes).
# A process that imports the stages otherwise (the tests) keeps it on.
if sys.argv[:1] == ["-m"]:
    gc.disable()

# First, before any stage loads NumPy, TensorFlow or matplotlib: fashion_shap's import-time settings.
import fashion_shap  # noqa: F401
