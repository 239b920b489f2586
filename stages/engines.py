"""The explain section's engine settings, shared by the stages that explain: explain and mistakes."""

from deepshap import OUTPUTS, SOFTMAX_RULES, Explainer, UnsupportedModelError
from stages.common import PipelineError

ENGINES = ("fast", "shap")


def check_engine_params(params: dict) -> None:
    """Fail with one line naming the param unless explain.engine, output and softmax_rule fit together."""
    for key, allowed in (("engine", ENGINES), ("output", OUTPUTS), ("softmax_rule", tuple(SOFTMAX_RULES))):
        if params[key] not in allowed:
            raise PipelineError(f"params.yaml: explain.{key} must be one of {', '.join(allowed)}, got {params[key]!r}")
    if params["engine"] == "shap" and params["output"] == "probability" and params["softmax_rule"] != "shap":
        raise PipelineError(
            "params.yaml: explain.engine: shap has only shap's softmax rule; set explain.softmax_rule: shap "
            "or explain.engine: fast"
        )


def fast_explainer(model, output: str, softmax_rule: str, chunk_size: int) -> Explainer:
    """Return the fast engine for model, or fail with one line pointing to explain.engine: shap."""
    try:
        return Explainer(model, output=output, softmax_rule=softmax_rule, chunk_size=chunk_size)
    except UnsupportedModelError as error:
        raise PipelineError(f"{error}; set explain.engine: shap in params.yaml") from None
