"""Per-item metrics: ROUGE through `evaluate` (with the local metric module in rouge_local.py, since the hub
is out of reach), exact match, edit similarity, the same text metrics on what a system wrote beyond what
the prompt gave, the likelihood of the reference (NLL per token and bits per byte), and a percentile
bootstrap confidence interval of a mean.
"""

from __future__ import annotations

import math
from pathlib import Path

from tasks.common.models import takes_position_mask

ROUGE_MODULE = Path(__file__).parent / "rouge_local.py"


BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95


def rouge(predictions: list[str], references: list[str], per_example: bool = False) -> dict:
    import evaluate

    metric = evaluate.load(str(ROUGE_MODULE))
    return metric.compute(predictions=predictions, references=references, use_aggregator=not per_example)


def normalized(text: str) -> str:
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> list[float]:
    """1.0 where the prediction equals the reference up to whitespace runs."""
    return [float(normalized(p) == normalized(r)) for p, r in zip(predictions, references, strict=True)]


def edit_similarity(predictions: list[str], references: list[str]) -> list[float]:
    """1 - normalized Indel distance of the stripped texts (`fuzz.ratio`, CodeXGLUE's and RepoBench's edit
    similarity), in [0, 1]; two empty texts are equal (1.0)."""
    from rapidfuzz import fuzz

    return [
        1.0 if not p.strip() and not r.strip() else fuzz.ratio(p.strip(), r.strip()) / 100
        for p, r in zip(predictions, references, strict=True)
    ]


def beyond_given(text: str, given: str) -> str:
    """`text` without the part the prompt already gave: when it starts with `given` (whitespace runs
    compared as one space), what follows; otherwise all of it. A docstring pair's reference starts with the
    signature its prompt holds (`def f(x)` before the reference's `def f(x):`), so an echo of the prompt
    scores 0 here instead of a precision of 1.0, and a model is scored on what it added."""
    want, i = normalized(given), len(text) - len(text.lstrip())
    for char in want:
        if char == " ":
            if i >= len(text) or not text[i].isspace():
                return text
            while i < len(text) and text[i].isspace():
                i += 1
        elif i < len(text) and text[i] == char:
            i += 1
        else:
            return text
    return text[i:] if want else text


def per_example_scores(
    predictions: list[str], references: list[str], given: list[str] | None = None
) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum, exact match and edit similarity of every prediction, and, with `given` (the
    prompts' inputs), ROUGE-L and edit similarity of what was written beyond it."""
    scores = {
        **rouge(predictions, references, per_example=True),
        "exact_match": exact_match(predictions, references),
        "edit_similarity": edit_similarity(predictions, references),
    }
    if given is not None:
        ours = [beyond_given(p, g) for p, g in zip(predictions, given, strict=True)]
        theirs = [beyond_given(r, g) for r, g in zip(references, given, strict=True)]
        scores["rougeL_written"] = rouge(ours, theirs, per_example=True)["rougeL"]
        scores["edit_similarity_written"] = edit_similarity(ours, theirs)
    return scores


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


def summarize(per_example: dict[str, list[float]], seed: int = 0) -> dict:
    """Means, with the bootstrap interval of each under `ci`."""
    means = {name: sum(v) / max(len(v), 1) for name, v in per_example.items()}
    return {**means, "ci": {name: bootstrap_ci(v, seed) for name, v in per_example.items()}}


def likelihood(model, tokenizer, rows, batch_size: int) -> dict[str, list[float]]:
    """Per row, over its label tokens (the response and end of sequence, when prompts are masked): the mean
    negative log-likelihood in nats per token (`nll`) and the total in bits per UTF-8 byte of the text
    those tokens spell (`bits_per_byte`; comparable across tokenizers, so across a champion with another
    vocabulary). Rows are tokenized rows (input_ids, labels), right-padded here in batches."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    masked = takes_position_mask(model)
    nll, bpb = [], []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in batch])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
        targets = torch.full_like(labels, -100)
        targets[:, :-1] = labels[:, 1:]  # position t predicts the label at t + 1
        scored = (targets != -100).to(model.device)
        # the LM head at the scored positions only, where the model can (`takes_position_mask`)
        keep = {"logits_to_keep": scored} if masked else {}
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **keep
            ).logits.float()
        logits = logits if masked else logits[scored]  # (scored positions, vocabulary), rows in order
        token_nll = torch.nn.functional.cross_entropy(
            logits, targets.to(logits.device)[scored], reduction="none"
        )
        for row, row_nll in zip(batch, token_nll.split(scored.sum(dim=1).tolist()), strict=True):
            total, count = float(row_nll.sum()), len(row_nll)
            text = tokenizer.decode([t for t in row["labels"] if t != -100], skip_special_tokens=True)
            nll.append(total / max(count, 1))
            bpb.append(total / math.log(2) / max(len(text.encode()), 1))
    return {"nll": nll, "bits_per_byte": bpb}
