"""The base model and the fine-tuned one, side by side on the same held-out rows."""

from __future__ import annotations

from pathlib import Path

from pipeline_config.schema import EvaluateConfig
from tasks.common.benchmarks import humaneval_problems
from tasks.common.generation import generate
from tasks.common.io import write_jsonl
from tasks.common.models import load_for_inference, load_tokenizer
from tasks.evaluation.metrics import per_example_scores, perplexity, summarize
from tasks.evaluation.passk import run_humaneval


def evaluate_models(
    dataset_dir: Path,
    model_dir: Path,
    out_dir: Path,
    base_path: str | Path,
    is_adapter: bool,
    cfg: EvaluateConfig,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> dict:
    """Score the fine-tuned model, the base model and the echo baseline on the same held-out rows.

    "echo_input" answers every prompt with its own input (the signature, for docstring pairs): a model
    that does not beat it has learned nothing worth promoting. Every score carries a bootstrap interval.
    """
    from datasets import load_from_disk

    test = load_from_disk(str(dataset_dir))["test"]
    if len(test) == 0:
        raise ValueError(f"the evaluation set in {dataset_dir} is empty: nothing to evaluate")
    rows = test.select(range(min(cfg.max_samples, len(test)))).to_list()  # held-out rows come shuffled
    tokenizer = load_tokenizer(model_dir, for_generation=True)
    prompts, references = [r["prompt"] for r in rows], [r["response"] for r in rows]
    generations = {"echo_input": [r.get("input", "") for r in rows]}
    scores = {"echo_input": per_example_scores(generations["echo_input"], references)}
    results = {"echo_input": summarize(scores["echo_input"], seed)}
    problems = humaneval_problems(cfg.humaneval.problems, seed) if cfg.humaneval.enabled else []
    humaneval, humaneval_rows = {}, []
    for name, weights in (("base", None), ("finetuned", str(model_dir))):
        model = load_for_inference(base_path, weights, is_adapter, trust_remote_code)
        outputs = generate(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
        generations[name] = [o.strip() for o in outputs]
        scores[name] = per_example_scores(generations[name], references)
        results[name] = {
            **summarize(scores[name], seed),
            "perplexity": perplexity(model, rows, cfg.batch_size, tokenizer.pad_token_id),
        }
        if problems:
            humaneval[name], per_problem = run_humaneval(model, tokenizer, problems, cfg)
            humaneval_rows += [{"system": name, **row} for row in per_problem]
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
    if problems:
        write_jsonl(out_dir / "humaneval.jsonl", humaneval_rows)
        humaneval["problems"] = len(problems)
    means = [k for k in results["base"] if k != "ci"]
    text = [k for k in means if k != "perplexity"]
    return {
        "rows_in": len(rows),
        "rows_out": len(rows),
        "finetuned": results["finetuned"],
        "base": results["base"],
        "echo_input": results["echo_input"],
        "delta": {k: results["finetuned"][k] - results["base"][k] for k in means},
        "delta_vs_echo": {k: results["finetuned"][k] - results["echo_input"][k] for k in text},
        **({"humaneval": humaneval} if problems else {}),
    }
