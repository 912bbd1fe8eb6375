"""The champion gate: does a new version beat the current champion on the gate metric?

Metrics are read from the champion version's tags, so the gate never depends on a run that may have been
deleted.
"""

from __future__ import annotations

LOWER_IS_BETTER = {"perplexity"}


def beats(candidate: float, champion: float | None, metric: str, min_improvement: float) -> bool:
    """The gate: does the challenger's metric beat the champion's by more than `min_improvement`?"""
    if champion is None:
        return True
    if metric in LOWER_IS_BETTER:
        return champion - candidate > min_improvement
    return candidate - champion > min_improvement


def champion_metric(client, model_name: str, metric: str) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None, None
    value = version.tags.get(f"metric.{metric}")
    return str(version.version), float(value) if value is not None else None
