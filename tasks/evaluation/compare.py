"""The base model and the fine-tuned one, side by side on the same held-out rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipeline_config.schema import EvaluateConfig
from tasks.common.generation import Completion, generate
from tasks.common.io import write_jsonl
from tasks.common.models import load_for_inference, load_tokenizer
from tasks.common.templates import PromptTemplate
from tasks.evaluation.metrics import per_example_scores, perplexity, summarize
from tasks.evaluation.passk import Benchmark, run_passk
from tasks.evaluation.report import write_markdown

SYSTEMS = ("base", "finetuned")


def new_token_budget(cfg: EvaluateConfig, references: list[str], tokenizer) -> dict:
    """max_new_tokens for the held-out rows: fixed, or the 95th percentile of the references' lengths in
    tokens plus end of sequence, rounded up to a multiple of 16 and capped. A cap far below the
    references would cut recall; far above, a rambling base model would cost minutes on the CPU."""
    lengths = sorted(len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in references)
    if cfg.max_new_tokens != "auto":
        chosen, rule = int(cfg.max_new_tokens), "evaluate.max_new_tokens"
    else:
        p95 = lengths[min(len(lengths) - 1, math.ceil(0.95 * len(lengths)) - 1)]
        chosen = min(-(-p95 // 16) * 16, cfg.max_new_tokens_cap)
        rule = f"p95 of reference tokens ({p95}), capped at {cfg.max_new_tokens_cap}"
    return {
        "max_new_tokens": chosen,
        "rule": rule,
        "references_longer": sum(n > chosen for n in lengths),
        "reference_tokens_max": lengths[-1],
    }


def generation_stats(completions: Sequence[Completion]) -> dict:
    return {
        "hit_cap": sum(c.hit_cap for c in completions),
        "empty": sum(c.empty for c in completions),
        "mean_new_tokens": sum(c.new_tokens for c in completions) / max(len(completions), 1),
    }


def evaluate_models(
    dataset_dir: Path,
    model_dir: Path,
    out_dir: Path,
    base_path: str | Path,
    is_adapter: bool,
    cfg: EvaluateConfig,
    trust_remote_code: bool = False,
    seed: int = 0,
    benchmarks: Sequence[Benchmark] = (),
) -> dict:
    """Score the fine-tuned model, the base model and the echo baseline on the same held-out rows.

    "echo_input" answers every prompt with its own input (the signature, for docstring pairs): a model
    that does not beat it has learned nothing worth promoting. Every score carries a bootstrap interval.
    Prompts were formatted with the template stored with the model; its headers are the stop sequences.
    """
    from datasets import load_from_disk

    test = load_from_disk(str(dataset_dir))["test"]
    if len(test) == 0:
        raise ValueError(f"the evaluation set in {dataset_dir} is empty: nothing to evaluate")
    rows = test.select(range(min(cfg.max_samples, len(test)))).to_list()  # held-out rows come shuffled
    tokenizer = load_tokenizer(model_dir, for_generation=True)
    template = PromptTemplate.load(model_dir)
    prompts, references = [r["prompt"] for r in rows], [r["response"] for r in rows]
    budget = new_token_budget(cfg, references, tokenizer)
    generation = {**budget, "stop": list(template.stop), "temperature": 0.0, "template": template.name}
    generations = {"echo_input": [r.get("input", "") for r in rows]}
    scores = {"echo_input": per_example_scores(generations["echo_input"], references)}
    results = {"echo_input": summarize(scores["echo_input"], seed)}
    passk: dict = {b.name: {"problems": len(b.problems), "key": b.key} for b in benchmarks}
    for name in SYSTEMS:
        model = load_for_inference(
            base_path, None if name == "base" else model_dir, is_adapter, trust_remote_code
        )
        outputs = generate(
            model, tokenizer, prompts, budget["max_new_tokens"], cfg.batch_size, stop=template.stop
        )
        generations[name] = [o.text.strip() for o in outputs]
        generation[name] = generation_stats(outputs)
        scores[name] = per_example_scores(generations[name], references)
        results[name] = {
            **summarize(scores[name], seed),
            "perplexity": perplexity(model, rows, cfg.batch_size, tokenizer.pad_token_id),
        }
        for bench in benchmarks:
            passk[bench.name][name], per_problem = run_passk(model, tokenizer, bench, cfg.batch_size)
            passk[bench.name].setdefault("rows", []).extend({"system": name, **r} for r in per_problem)
        del model
    # one row per example: every system's output and scores, the evidence the champion gate pairs on
    write_jsonl(
        out_dir / "predictions.jsonl",
        (
            {"id": r["id"], "prompt": r["prompt"], "reference": r["response"]}
            | {name: generations[name][i] for name in generations}
            | {"scores": {name: {m: v[i] for m, v in scores[name].items()} for name in scores}}
            for i, r in enumerate(rows)
        ),
    )
    for name, result in passk.items():
        write_jsonl(out_dir / f"{name}.jsonl", result.pop("rows", []))
    means = [k for k in results["base"] if k != "ci"]
    text = [k for k in means if k != "perplexity"]
    report = {
        "rows_in": len(rows),
        "rows_out": len(rows),
        "finetuned": results["finetuned"],
        "base": results["base"],
        "echo_input": results["echo_input"],
        "delta": {k: results["finetuned"][k] - results["base"][k] for k in means},
        "delta_vs_echo": {k: results["finetuned"][k] - results["echo_input"][k] for k in text},
        "generation": generation,
        **passk,
    }
    write_markdown(out_dir / "report.md", report, out_dir / "predictions.jsonl")
    return report
