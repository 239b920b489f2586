"""The pipeline's stages: one script per stage of dvc.yaml, run as `python -m stages.<name>`.

The code they share lives in the fashion_shap package, the attribution rules in deepshap.
"""

import fashion_shap  # noqa: F401  first, before any stage loads NumPy, TensorFlow or matplotlib: its import-time settings
