"""The options every engine takes, apart from their code, so that a caller checks them without loading an
engine's libraries (the CPU engine's TensorFlow, the accelerated engine's JAX)."""

OUTPUTS = ("probability", "logit")  # what is explained: the softmax's outputs, or the logits before it
SOFTMAX_RULE_NAMES = ("shap", "shapley")  # the head rules of output "probability" (deepshap.head)
