"""Metrics of generations and of likelihood: ROUGE through `evaluate` (with the local metric module in
rouge_local.py, since the hub is out of reach) and perplexity on the label tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

ROUGE_MODULE = Path(__file__).parent / "rouge_local.py"


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    import evaluate

    return evaluate.load(str(ROUGE_MODULE)).compute(predictions=predictions, references=references)


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
