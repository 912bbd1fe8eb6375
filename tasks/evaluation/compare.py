"""The base model and the fine-tuned one, side by side on the same held-out rows."""

from __future__ import annotations

from pathlib import Path

from pipeline_config.schema import EvaluateConfig
from tasks.common.generation import generate
from tasks.common.io import write_jsonl
from tasks.common.models import load_for_inference, load_tokenizer
from tasks.evaluation.metrics import perplexity, rouge


def evaluate_models(
    dataset_dir: Path,
    model_dir: Path,
    out_dir: Path,
    base_path: str | Path,
    is_adapter: bool,
    cfg: EvaluateConfig,
    trust_remote_code: bool = False,
) -> dict:
    from datasets import load_from_disk

    test = load_from_disk(str(dataset_dir))["test"]
    test = test.select(range(min(cfg.max_samples, len(test))))
    rows = test.to_list()
    tokenizer = load_tokenizer(model_dir, for_generation=True)
    prompts, references = [r["prompt"] for r in rows], [r["response"] for r in rows]
    results, generations = {}, {}
    for name, weights in (("base", None), ("finetuned", str(model_dir))):
        model = load_for_inference(base_path, weights, is_adapter, trust_remote_code)
        outputs = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
        generations[name] = [o.strip() for o in outputs]
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
