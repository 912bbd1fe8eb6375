"""Stage 6, evaluate: the base model and the fine-tuned one on the held-out test split.

Metrics per model: ROUGE-1/2/L/Lsum of greedy generations against the reference responses (through the
`evaluate` library, with the local metric module in tasks/metrics, since the hub is out of reach), and
perplexity on the reference response tokens. Output: `predictions.jsonl` (prompt, reference, both models'
generations) and report.json with `base`, `finetuned` and `delta`.

Run alone: `finetune run --config pipeline_config/offline.yaml --only evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from pipeline_config import PipelineConfig
from pipeline_config.schema import EvaluateConfig
from tasks.stage import StageOutput, StageSpec, file_version, read_report, stage_task, write_jsonl

ROUGE_MODULE = Path(__file__).parent / "metrics" / "rouge_local.py"


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    import evaluate

    return evaluate.load(str(ROUGE_MODULE)).compute(predictions=predictions, references=references)


def load_for_eval(base_path: str, adapter_or_model: str | None, is_adapter: bool, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    path = adapter_or_model if adapter_or_model and not is_adapter else base_path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if adapter_or_model and is_adapter:
        from peft import PeftModel

        # merged weights generate ~2x faster than a LoRA wrapper and give the same outputs
        model = PeftModel.from_pretrained(model, adapter_or_model).merge_and_unload()
    return model.to(device).eval()


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


def generate(model, tokenizer, prompts: list[str], cfg: EvaluateConfig, max_positions: int) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only batches must end at the prompt's last token
    tokenizer.truncation_side = "left"  # an over-long prompt loses its start, never "### Response:"
    outputs = []
    for start in range(0, len(prompts), cfg.batch_size):
        enc = tokenizer(
            prompts[start : start + cfg.batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max(max_positions - cfg.max_new_tokens, 8),
            add_special_tokens=False,
        ).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=cfg.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [o.strip() for o in outputs]


def evaluate_models(
    tokenized_dir: Path,
    model_dir: Path,
    out_dir: Path,
    base_path: str,
    is_adapter: bool,
    cfg: EvaluateConfig,
    trust_remote_code: bool = False,
) -> dict:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    test = load_from_disk(str(tokenized_dir / "dataset"))["test"]
    test = test.select(range(min(cfg.max_samples, len(test))))
    rows = test.to_list()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts, references = [r["prompt"] for r in rows], [r["response"] for r in rows]
    results, generations = {}, {}
    for name, weights in (("base", None), ("finetuned", str(model_dir))):
        model = load_for_eval(base_path, weights, is_adapter, trust_remote_code)
        max_positions = getattr(model.config, "max_position_embeddings", 2048)
        generations[name] = generate(model, tokenizer, prompts, cfg, max_positions)
        results[name] = {
            **rouge(generations[name], references),
            "perplexity": perplexity(model, rows, cfg.batch_size, tokenizer.pad_token_id),
        }
        del model
    write_jsonl(
        out_dir / "predictions.jsonl",
        (
            {"id": r["id"], "prompt": r["prompt"], "reference": r["response"], "base": b, "finetuned": f}
            for r, b, f in zip(rows, generations["base"], generations["finetuned"], strict=True)
        ),
    )
    delta = {k: results["finetuned"][k] - results["base"][k] for k in results["base"]}
    return {"rows_in": len(rows), "rows_out": len(rows), **results, "delta": delta}


def run(cfg: PipelineConfig, inputs: Mapping[str, StageOutput], out_dir: Path, context: Mapping) -> dict:
    train_report = read_report(inputs["train"])
    return evaluate_models(
        Path(inputs["tokenize"].path),
        Path(inputs["train"].path) / "model",
        out_dir,
        train_report["base_model"],
        train_report["adapter"],
        cfg.evaluate,
        cfg.model.trust_remote_code,
    )


SPEC = StageSpec("evaluate", run, ("evaluate", "model"), file_version(__file__, ROUGE_MODULE))
TASK = stage_task(SPEC)
