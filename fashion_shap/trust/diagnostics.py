"""Per-reference diagnostics: each of the first background images' own contribution to the maps (the
values are a mean over references, so a background of one is exact): the share of their squared norm
the largest 1 and 5 carry, the effective number of references, the largest head multiplier."""

import numpy as np

from deepshap import Explainer

TOP_REFERENCES = 5  # the diagnostics' second share: of the largest 5 references


def reference_norms(logit: Explainer, images: np.ndarray, references: np.ndarray, multipliers: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Return, per rule, the squared norm of each reference's own contribution to the maps, (references,).

    Against one reference the logit explainer's values are that reference's contributions to the
    logits, (images, pixels, logits); a rule's head multipliers (images, references, classes, logits)
    carry them to the classes (DeepLIFT's chain rule, exact), so one pass serves every rule.
    """
    norms = {name: np.empty(len(references)) for name in multipliers}
    for index, logits in enumerate(logit.reference_values(images, references)):
        logits = logits.reshape(len(images), -1, logits.shape[-1]).astype(np.float64)
        for name, rule in multipliers.items():
            norms[name][index] = np.sum(np.einsum("kpl,kcl->kpc", logits, rule[:, index]) ** 2)
    return norms


def concentration(norms: np.ndarray) -> dict:
    """Return how few references carry the maps: the shares of the largest 1 and 5 squared norms, and
    the effective number of references (sum w)^2 / sum w^2 (n for n equal ones, 1 for a single one)."""
    ordered = np.sort(norms)[::-1]
    total = ordered.sum()
    return {
        "top1_share": float(ordered[0] / total),
        f"top{TOP_REFERENCES}_share": float(ordered[:TOP_REFERENCES].sum() / total),
        "effective_references": float(total**2 / np.sum(ordered**2)),
    }


def diagnostics(explainers: dict[str, Explainer], images: np.ndarray, references: np.ndarray) -> dict:
    """Return, per rule, the concentration of the maps over references and the largest |head multiplier|."""
    multipliers = {name: explainer.head_multipliers(images, references) for name, explainer in explainers.items()}
    norms = reference_norms(explainers["logit"], images, references, multipliers)
    return {
        name: {**concentration(norms[name]), "max_abs_multiplier": float(np.abs(multipliers[name]).max())}
        for name in explainers
    }
