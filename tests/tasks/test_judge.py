"""The judge discriminates: real tiny models through evaluate_models and the gate. A LoRA adapter trained on
the data the held-out rows resemble is promoted over its base; a damaged challenger (a diverged run: its
output layer noise) is refused with a reason naming the metric and its interval; an adapter that changes
nothing (the base model twice) is not an improvement; a champion is displaced only by paired evidence.
(The guard's refusal of a challenger better on the primary metric is in test_registration.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import tokenized_dataset

from pipeline_config.schema import EvaluateConfig, TokenizeConfig
from tasks.common.templates import ALPACA
from tasks.evaluation.compare import evaluate_models
from tasks.registration.gate import decide
from tasks.registration.registry import scores_from

PRIMARY = "heldout.bits_per_byte"


def lora(base_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )


def save(model, base_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    ALPACA.save(out)
    return out


def batches(rows: list[dict], size: int, pad_id: int):
    for start in range(0, len(rows) - size + 1, size):
        chunk = rows[start : start + size]
        width = max(len(r["input_ids"]) for r in chunk)
        yield (
            torch.tensor([r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in chunk]),
            torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk]),
            torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk]),
        )


def train(base_dir: Path, rows: list[dict], pad_id: int):
    model = lora(base_dir)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(8):  # epochs over the ~30 training rows: the four functions the held-out rows repeat
        for ids, mask, labels in batches(rows, 6, pad_id):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_model_dir: Path) -> dict:
    """Per-item held-out scores of three challengers against the same base, as evaluate writes them."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenized, _ = tokenized_dataset(tmp_path_factory, tiny_model_dir, 40, TokenizeConfig(max_length=200))
    train_rows = load_from_disk(str(tokenized / "dataset"))["train"].to_list()
    pad_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    root = tmp_path_factory.mktemp("judged")

    torch.manual_seed(0)
    unchanged = save(lora(tiny_model_dir), tiny_model_dir, root / "unchanged")  # B = 0: the base itself
    trained = save(train(tiny_model_dir, train_rows, pad_id), tiny_model_dir, root / "trained")
    # a run that diverged: full weights whose output layer is noise (a LoRA on this 32-wide model cannot
    # move its logits far from uniform, which an untrained base already is)
    broken = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        broken.get_output_embeddings().weight.add_(torch.randn_like(broken.get_output_embeddings().weight))
    damaged = save(broken, tiny_model_dir, root / "damaged")

    cfg = EvaluateConfig(max_samples=2, max_new_tokens=2, batch_size=8)
    scores = {}
    for name, tuned in (("trained", trained), ("damaged", damaged), ("unchanged", unchanged)):
        out = root / f"eval-{name}"
        out.mkdir()
        evaluate_models(tokenized / "dataset", tuned, out, str(tiny_model_dir), name != "damaged", cfg)
        scores[name] = {
            s: scores_from(out / "predictions.jsonl", s, "bits_per_byte") for s in ("finetuned", "base")
        }
    return scores


def verdict(judged: dict, challenger: str, champion: str | None = None):
    evidence = {PRIMARY: judged[challenger]}
    theirs = judged[champion]["finetuned"] if champion else None
    return decide(evidence, PRIMARY, champion=theirs, champion_version="1" if champion else None)


def test_a_trained_challenger_is_promoted(judged):
    decision = verdict(judged, "trained")
    assert decision.promote and decision.reason.startswith("no champion yet; it beats its base model")
    assert len(judged["trained"]["finetuned"]) >= 8  # every held-out row, not only the generated ones


def test_a_damaged_challenger_is_refused_naming_metric_and_interval(judged):
    decision = verdict(judged, "damaged")
    assert not decision.promote
    assert decision.reason.startswith("does not beat its base model: heldout.bits_per_byte vs base")
    assert "paired 95% interval [+" in decision.reason  # more bits per byte than the base on every reading


def test_the_base_model_twice_is_not_an_improvement(judged):
    decision = verdict(judged, "unchanged")
    (base,) = decision.comparisons
    assert not decision.promote and base["ci"] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_a_champion_is_displaced_only_by_paired_evidence(judged):
    assert verdict(judged, "trained", champion="damaged").promote
    kept = verdict(judged, "damaged", champion="trained")
    assert not kept.promote
    same = verdict(judged, "trained", champion="trained")  # the champion evaluated again
    assert not same.promote and "does not beat champion v1 by register.min_improvement" in same.reason
