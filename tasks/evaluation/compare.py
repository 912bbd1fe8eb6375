"""Every system scored per item on the same items, suite by suite; the paired comparisons of the fine-tuned
model with each other system.

Suites (pipeline_config/metrics.py names their metrics):
- heldout: the held-out rows. Likelihood of the reference on every row (every model); greedy generations
  on the first `max_samples` rows scored by ROUGE, exact match and edit similarity, in full and on what was
  written beyond the prompt's input (`_written`). Systems: fine-tuned, base, echo_input (the input as the
  answer: on docstring pairs the signature).
- completion / fim: the next line, and a middle, of held-out code (completion.py); baseline previous_line.
- humaneval / sklearn_doctests: pass@k in the sandbox, each model prompted the way it expects
  (prompting.py): the fine-tuned model in its training template, the base in its chat template when it has
  one, else the raw stub.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_config.metrics import SUITES, pass_k_metrics
from pipeline_config.schema import EvaluateConfig
from tasks.common import sandbox
from tasks.common.generation import Completion, generate
from tasks.common.io import write_jsonl
from tasks.common.models import cast, load_for_inference, load_tokenizer, pick_device, resolve_precision
from tasks.common.templates import PromptTemplate
from tasks.evaluation import completion
from tasks.evaluation.metrics import likelihood, per_example_scores
from tasks.evaluation.paired import comparisons
from tasks.evaluation.passk import Benchmark, run_passk
from tasks.evaluation.prompting import base_style, template_style
from tasks.evaluation.report import comparison_records, write_markdown

SYSTEMS = ("base", "finetuned")
CHALLENGER = "finetuned"
SUITE_FILES = {"heldout": "predictions.jsonl"}  # the rest: <suite>.jsonl


def suite_file(name: str) -> str:
    return SUITE_FILES.get(name, f"{name}.jsonl")


@dataclass
class Suite:
    """Items of one suite with every system's output and scores per item (one JSONL row per item)."""

    name: str
    items: list[dict]  # each: id, the item's own fields, outputs {system: text}, scores {system: {metric}}
    directions: dict[str, str]
    info: dict = field(default_factory=dict)  # key, prompt styles, counts: what a reader needs beside scores

    def add(self, system: str, outputs: Sequence | None, scores: dict[str, list[float]], at=None) -> None:
        """A system's outputs and per-item scores, for the items at positions `at` (default: all)."""
        positions = list(range(len(self.items))) if at is None else list(at)
        for j, i in enumerate(positions):
            item = self.items[i]
            if outputs is not None:
                item.setdefault("outputs", {})[system] = outputs[j]
            item.setdefault("scores", {}).setdefault(system, {}).update({m: v[j] for m, v in scores.items()})

    def per_metric(self) -> dict[str, dict[str, list[float]]]:
        """scores[system][metric] over the items every system scored on that metric, in item order."""
        out: dict[str, dict[str, list[float]]] = {}
        for metric in self.directions:
            systems = {s for item in self.items for s, per in item.get("scores", {}).items() if metric in per}
            common = [it for it in self.items if all(metric in it["scores"].get(s, {}) for s in systems)]
            for system in systems:
                out.setdefault(system, {})[metric] = [it["scores"][system][metric] for it in common]
        return out

    def report(self, seed: int) -> dict:
        return {
            "items": len(self.items),
            **self.info,
            "metrics": comparisons(self.per_metric(), self.directions, CHALLENGER, seed),
        }


@contextmanager
def timed(suite: Suite, system: str) -> Iterator[None]:
    """Seconds a system spent on a suite, in the report: where the evaluation's minutes go."""
    start = time.perf_counter()
    yield
    suite.info.setdefault("seconds", {})[system] = round(time.perf_counter() - start, 1)


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


def heldout_suite(rows: list[dict], generated: int) -> Suite:
    items = [
        {"id": r["id"], "prompt": r["prompt"], "reference": r["response"], "input": r.get("input", "")}
        for r in rows
    ]
    suite = Suite("heldout", items, dict(SUITES["heldout"]), {"generated": generated})
    echo = [it["input"] for it in items[:generated]]  # the answer, and the part the prompt gave
    references = [it["reference"] for it in items[:generated]]
    suite.add("echo_input", echo, per_example_scores(echo, references, echo), range(generated))
    return suite


def completion_suite(name: str, cases: list[dict], key: str) -> Suite:
    suite = Suite(name, [dict(c, id=c["task_id"]) for c in cases], dict(SUITES[name]), {"key": key})
    baseline = [completion.previous_line(c) for c in cases]
    suite.add("previous_line", baseline, _completion_scores(cases, baseline))
    return suite


def _completion_scores(cases: list[dict], texts: list[str]) -> dict[str, list[float]]:
    per = [completion.score(c, t) for c, t in zip(cases, texts, strict=True)]
    return {m: [p[m] for p in per] for m in completion.METRICS}


def passk_suite(bench: Benchmark) -> Suite:
    items = [{"id": p["task_id"]} for p in bench.problems]
    info = {"key": bench.key, "problems": len(items), "prompt_style": {}}
    return Suite(bench.name, items, pass_k_metrics(bench.spec.k), info)


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
    completion_cases: dict[str, tuple[list[dict], str]] | None = None,
) -> dict:
    """Score the fine-tuned model, the base model and the baselines per item on every suite's items.

    `completion_cases`: {"completion" | "fim": (cases, key)}. Held-out prompts were formatted with the
    template stored with the model; its headers are the stop sequences.
    """
    from datasets import load_from_disk

    test = load_from_disk(str(dataset_dir))["test"]
    if len(test) == 0:
        raise ValueError(f"the evaluation set in {dataset_dir} is empty: nothing to evaluate")
    rows = test.to_list()  # held-out rows come shuffled: the first max_samples are a random sample
    generated = min(cfg.max_samples, len(rows))
    tokenizer = load_tokenizer(model_dir, for_generation=True)
    base_tokenizer = load_tokenizer(base_path, for_generation=True)
    template = PromptTemplate.load(model_dir)
    prompts = [r["prompt"] for r in rows[:generated]]
    references = [r["response"] for r in rows[:generated]]
    given = [r.get("input", "") for r in rows[:generated]]
    budget = new_token_budget(cfg, references, tokenizer)
    precision = resolve_precision(cfg.precision, pick_device())
    generation = {
        **budget,
        "stop": list(template.stop),
        "temperature": 0.0,
        "template": template.name,
        "precision": precision,
    }
    suites = {"heldout": heldout_suite(rows, generated)}
    for name, (cases, key) in (completion_cases or {}).items():
        suites[name] = completion_suite(name, cases, key)
    suites |= {b.name: passk_suite(b) for b in benchmarks}
    for system in SYSTEMS:
        model = load_for_inference(
            base_path, None if system == "base" else model_dir, is_adapter, trust_remote_code, "fp32"
        )
        own = base_tokenizer if system == "base" else tokenizer
        with timed(suites["heldout"], system):
            suites["heldout"].add(system, None, likelihood(model, tokenizer, rows, cfg.batch_size))
            model = cast(model, precision)  # the scores above are fp32's on any machine
            outputs = generate(
                model, tokenizer, prompts, budget["max_new_tokens"], cfg.batch_size, stop=template.stop
            )
            texts = [o.text.strip() for o in outputs]
            generation[system] = generation_stats(outputs)
            suites["heldout"].add(
                system, texts, per_example_scores(texts, references, given), range(generated)
            )
        for name, (cases, _) in (completion_cases or {}).items():
            if name == "fim" and not completion.supports_fim(own):
                suites[name].info.setdefault("not_scored", {})[system] = "its tokenizer has no FIM tokens"
                continue
            with timed(suites[name], system):
                done = completion.complete(model, own, cases, cfg.batch_size, cfg.completion.max_new_tokens)
                texts = [c.text for c in done]
                suites[name].add(system, texts, _completion_scores(cases, texts))
        for bench in benchmarks:
            style = template_style(template) if system == CHALLENGER else base_style(own)
            suite = suites[bench.name]
            with timed(suite, system):
                _, per_problem = run_passk(model, own, bench, cfg.batch_size, style)
            suite.info["prompt_style"][system] = style.name
            shown = [{k: r[k] for k in ("generations", "completions", "statuses")} for r in per_problem]
            suite.add(system, shown, {m: [r["scores"][m] for r in per_problem] for m in suite.directions})
        del model
    for name, suite in suites.items():
        write_jsonl(out_dir / suite_file(name), suite.items)
    reports = {name: suite.report(seed) for name, suite in suites.items()}
    report = {
        "rows_in": len(rows),
        "rows_out": len(rows),
        "suites": reports,
        "means": means(reports),
        "generation": generation,
        "precision": {"likelihood": "fp32", "generation": precision},
    }
    if benchmarks:  # generated code ran: in which sandbox
        backend = sandbox.resolve()
        report["sandbox"] = {"backend": backend, "isolation": sandbox.describe(backend)}
    write_jsonl(out_dir / "comparisons.jsonl", comparison_records(report))
    write_markdown(out_dir / "report.md", report, out_dir / suite_file("heldout"))
    return report


def means(suites: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{system: {"suite.metric": mean}}: the headline numbers (MLflow, the version's tags)."""
    out: dict[str, dict[str, float]] = {}
    for suite, report in suites.items():
        for metric, entry in report["metrics"].items():
            for system, s in entry["systems"].items():
                out.setdefault(system, {})[f"{suite}.{metric}"] = s["mean"]
    return out
