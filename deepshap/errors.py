"""The engines' one error, apart from their code so that each engine raises it without loading the other's
libraries (the CPU engine's TensorFlow, the accelerated engine's JAX)."""


class UnsupportedModelError(ValueError):
    """The model has a layer or activation an engine has no rule for; shap.DeepExplainer may handle it."""
