"""Metrics of generations and of likelihood: ROUGE through `evaluate` (with the local metric module in
rouge_local.py, since the hub is out of reach), exact match, perplexity on the label tokens, and a
percentile bootstrap confidence interval for every per-example score.
"""

from __future__ import annotations

import math
from pathlib import Path

ROUGE_MODULE = Path(__file__).parent / "rouge_local.py"


BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95


def rouge(predictions: list[str], references: list[str], per_example: bool = False) -> dict:
    import evaluate

    metric = evaluate.load(str(ROUGE_MODULE))
    return metric.compute(predictions=predictions, references=references, use_aggregator=not per_example)


def exact_match(predictions: list[str], references: list[str]) -> list[float]:
    """1.0 where the prediction equals the reference up to whitespace runs."""
    return [
        float(" ".join(p.split()) == " ".join(r.split()))
        for p, r in zip(predictions, references, strict=True)
    ]


def bootstrap_ci(values: list[float], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """Percentile bootstrap interval of the mean (CI_LEVEL); one value gives a zero-width interval."""
    import numpy as np

    if not values:
        return [float("nan"), float("nan")]
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    means = data[picks].mean(axis=1)
    tail = (1 - CI_LEVEL) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def per_example_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum and exact match of every prediction: what means, intervals and the paired
    champion gate are computed from."""
    return {
        **rouge(predictions, references, per_example=True),
        "exact_match": exact_match(predictions, references),
    }


def summarize(per_example: dict[str, list[float]], seed: int = 0) -> dict:
    """Means, with the bootstrap interval of each under `ci`."""
    means = {name: sum(v) / max(len(v), 1) for name, v in per_example.items()}
    return {**means, "ci": {name: bootstrap_ci(v, seed) for name, v in per_example.items()}}


def perplexity(model, rows, batch_size: int, pad_id: int) -> float:
    """exp of the mean token NLL over the label tokens (the responses, when prompts are masked)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in batch])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
            ).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total_nll += nll.item()
        total_tokens += int((shift_labels != -100).sum())
    return math.exp(min(total_nll / max(total_tokens, 1), 50))
