"""The pipeline's stages: one script per stage of dvc.yaml, run as `python -m stages.<name>`.

The code they share lives in the fashion_shap package, the attribution rules in deepshap.
"""

# First, before any stage loads NumPy, TensorFlow or matplotlib: fashion_shap's import-time settings.
import fashion_shap  # noqa: F401
