"""evaluate_models (tasks/evaluation/compare.py, the evaluate stage's work function) end to end on a tiny
model and a tiny LoRA adapter or full weights: every system scored per item, the paired comparisons, the
report and its markdown, the new-token budget, and a model that writes nothing. The parts have their own
modules: test_evaluation_metrics.py, common/test_generation.py, test_paired.py, test_passk.py,
test_completion.py, test_prompting.py, test_doctests.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import tokenized_dataset

from pipeline_config.schema import EvaluateConfig, TokenizeConfig
from tasks.common.templates import ALPACA
from tasks.evaluation.compare import evaluate_models
from tasks.evaluation.metrics import rouge
from tests.tasks.lm_references import greedy, independent_nll


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so the 'finetuned' model differs from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    )
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    ALPACA.save(out)  # the template travels with the model
    return out


def test_evaluate_models_end_to_end(
    tmp_path_factory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_dir: Path,
    adapter_dir: Path,
    tiny_lm,
) -> None:
    from datasets import load_from_disk

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU fp32, as the references

    tokenized, _ = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 20, TokenizeConfig(max_length=200), seed=0
    )
    test_rows = load_from_disk(str(tokenized / "dataset"))["test"].to_list()
    assert len(test_rows) > 4  # max_samples takes the first 4 of the (shuffled) held-out rows
    # 4 rows: a full and a ragged batch; fp32 generation, as the references
    cfg = EvaluateConfig(max_samples=4, max_new_tokens=6, batch_size=3, precision="fp32")
    report = evaluate_models(tokenized / "dataset", adapter_dir, tmp_path, str(tiny_model_dir), True, cfg)

    assert (report["rows_in"], report["rows_out"]) == (len(test_rows), len(test_rows))
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(test_rows)  # every held-out row: its likelihood; the first 4: generations too
    generated = [p for p in preds if "outputs" in p]
    assert len(generated) == 4 and all("outputs" not in p for p in preds[4:])
    for pred, row in zip(preds, test_rows, strict=True):
        assert (pred["id"], pred["prompt"], pred["reference"]) == (row["id"], row["prompt"], row["response"])
        for system in ("base", "finetuned"):
            assert set(pred["scores"][system]) >= {"nll", "bits_per_byte"}
    for pred, row in zip(generated, test_rows[:4], strict=True):
        assert set(pred["outputs"]) == {"echo_input", "base", "finetuned"}
        assert pred["outputs"]["echo_input"] == row["input"]  # the baseline answers with the prompt's input
        assert "nll" not in pred["scores"]["echo_input"]  # a baseline that is not a model has no likelihood

    # both columns are the models' own greedy continuations of each prompt on its own (no padding): the
    # batched, left-padded generation must not change them
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_lm
    fresh_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # PeftModel edits its base in place
    finetuned = PeftModel.from_pretrained(fresh_base, adapter_dir).eval()
    assert len({len(p["prompt"]) for p in generated}) > 1  # prompts of several lengths: padding is exercised
    for pred in generated:
        assert pred["outputs"]["base"] == greedy(model, tokenizer, pred["prompt"], 6)
        with finetuned.disable_adapter():
            assert pred["outputs"]["base"] == greedy(finetuned, tokenizer, pred["prompt"], 6)
        assert pred["outputs"]["finetuned"] == greedy(finetuned, tokenizer, pred["prompt"], 6)

    assert set(report) == {"rows_in", "rows_out", "suites", "means", "generation", "precision"}
    assert report["precision"] == {"likelihood": "fp32", "generation": "fp32"}
    assert report["generation"]["max_new_tokens"] == 6 and report["generation"]["stop"] == list(ALPACA.stop)
    for name in ("base", "finetuned"):  # a random model never ends on its own within 6 tokens
        assert report["generation"][name]["hit_cap"] + report["generation"][name]["empty"] >= 1
    heldout = report["suites"]["heldout"]
    assert (heldout["items"], heldout["generated"]) == (len(test_rows), 4)
    nll, rouge_l = heldout["metrics"]["nll"], heldout["metrics"]["rougeL"]
    assert nll["n"] == len(test_rows) and set(nll["vs"]) == {"base"} and nll["direction"] == "lower"
    assert rouge_l["n"] == 4 and set(rouge_l["vs"]) == {"base", "echo_input"}
    # every comparison is the paired difference of the per-item scores written beside the report
    for metric, entry in heldout["metrics"].items():
        items = [p for p in preds if metric in p["scores"]["finetuned"]]
        for other, diff in entry["vs"].items():
            per_item = [p["scores"]["finetuned"][metric] - p["scores"][other][metric] for p in items]
            assert diff["difference"] == pytest.approx(sum(per_item) / len(per_item), abs=1e-12)
            low, high = diff["ci"]
            assert low - 1e-12 <= diff["difference"] <= high + 1e-12, (metric, other)
        for system, summary in entry["systems"].items():
            assert summary["mean"] == pytest.approx(report["means"][system][f"heldout.{metric}"])
    # the per-item scores are those of the outputs and the model: ROUGE recomputed, likelihood recomputed
    refs = [p["reference"] for p in generated]
    for name in ("echo_input", "base", "finetuned"):
        assert [p["scores"][name]["rougeL"] for p in generated] == pytest.approx(
            rouge([p["outputs"][name] for p in generated], refs, per_example=True)["rougeL"]
        )
    for row, pred in zip(test_rows, preds, strict=True):
        total, count = independent_nll(model, row)
        assert pred["scores"]["base"]["nll"] == pytest.approx(total / count, rel=1e-4)
    # the adapter was applied: a different model, so a different likelihood on every row
    assert all(p["scores"]["base"]["nll"] != p["scores"]["finetuned"]["nll"] for p in preds)
    markdown = (tmp_path / "report.md").read_text()
    assert "| heldout.bits_per_byte | lower | " in markdown and "| echo_input |" in markdown
    diff = heldout["metrics"]["rougeL"]["vs"]["echo_input"]
    assert f"{diff['difference']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]" in markdown


def test_evaluate_models_full_weights(
    tmp_path_factory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    """is_adapter=False: the fine-tuned model is loaded from its own folder (here: another seed's weights)."""
    from builders import build_tiny_model
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU fp32, as the references

    other = build_tiny_model(tmp_path / "other", seed=5)
    ALPACA.save(other)
    tokenized, _ = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 20, TokenizeConfig(max_length=200), seed=0
    )
    cfg = EvaluateConfig(max_samples=2, max_new_tokens=4, batch_size=2, precision="fp32")
    out_dir = tmp_path / "out_dir"
    out_dir.mkdir()
    report = evaluate_models(tokenized / "dataset", other, out_dir, str(tiny_model_dir), False, cfg)
    rows = load_from_disk(str(tokenized / "dataset"))["test"].to_list()
    assert report["rows_out"] == len(rows) and report["suites"]["heldout"]["generated"] == 2
    for name, path in (("base", tiny_model_dir), ("finetuned", other)):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        totals = [independent_nll(model, row) for row in rows]
        expected = sum(n / c for n, c in totals) / len(totals)
        assert report["means"][name]["heldout.nll"] == pytest.approx(expected, rel=1e-4)
    assert report["means"]["finetuned"]["heldout.nll"] != report["means"]["base"]["heldout.nll"]
    assert len((out_dir / "predictions.jsonl").read_text().splitlines()) == len(rows)


def test_new_token_budget_follows_the_references(tiny_lm) -> None:
    from tasks.evaluation.compare import new_token_budget

    _, tokenizer = tiny_lm
    references = ["x = 1"] * 19 + ["y = [" + "1, " * 200 + "]"]  # one outlier above the 95th percentile
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in references]
    auto = new_token_budget(EvaluateConfig(max_new_tokens="auto"), references, tokenizer)
    assert auto["max_new_tokens"] == 16  # p95 is a short reference: rounded up to 16
    assert auto["references_longer"] == 1 and auto["reference_tokens_max"] == max(lengths)
    capped = new_token_budget(EvaluateConfig(max_new_tokens_cap=8), ["y = [" + "1, " * 50 + "]"], tokenizer)
    assert capped["max_new_tokens"] == 8 and capped["references_longer"] == 1
    fixed = new_token_budget(EvaluateConfig(max_new_tokens=40), references, tokenizer)
    assert fixed["max_new_tokens"] == 40 and fixed["rule"] == "evaluate.max_new_tokens"


def test_a_model_that_writes_nothing_scores_zero_and_is_counted(
    tmp_path_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path
) -> None:
    """Only the end-of-sequence token (an empty completion) from both models: scored 0, reported, and the
    echo baseline still stands beside them."""
    from tasks.common.generation import Completion
    from tasks.evaluation import compare

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(
        compare, "generate", lambda m, t, prompts, *a, **k: [Completion("", 1, False)] * len(prompts)
    )
    tokenized, _ = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 20, TokenizeConfig(max_length=200), seed=0
    )
    cfg = EvaluateConfig(max_samples=3, max_new_tokens=6, batch_size=3)
    report = evaluate_models(tokenized / "dataset", adapter_dir, tmp_path, str(tiny_model_dir), True, cfg)
    rouge_l = report["suites"]["heldout"]["metrics"]["rougeL"]["systems"]
    for name in ("base", "finetuned"):
        assert report["generation"][name] == {"hit_cap": 0, "empty": 3, "mean_new_tokens": 1.0}
        assert rouge_l[name]["mean"] == 0.0 and rouge_l[name]["ci"] == [0.0, 0.0]
    assert rouge_l["echo_input"]["mean"] > 0.0
    undecided = report["suites"]["heldout"]["metrics"]["rougeL"]["vs"]["base"]["undecidable"]
    assert undecided == "both systems score 0 on all 3 items: no evidence either way"
    assert "base: 0 hit the cap, 3 empty" in (tmp_path / "report.md").read_text()


def test_bf16_generation_keeps_fp32_likelihoods(
    tmp_path_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path
) -> None:
    """evaluate.precision bf16 on a CPU with native bf16 (simulated): the models generate with bf16
    weights (each output is the bf16-cast model's own greedy continuation), while every likelihood, what
    the gate pairs across runs and machines, is fp32's; the report and its markdown say which is which."""
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.common import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    tokenized, _ = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 20, TokenizeConfig(max_length=200), seed=0
    )
    cfg = EvaluateConfig(max_samples=3, max_new_tokens=5, batch_size=2, precision="bf16")
    report = evaluate_models(tokenized / "dataset", adapter_dir, tmp_path, str(tiny_model_dir), True, cfg)
    assert report["precision"] == {"likelihood": "fp32", "generation": "bf16"}
    assert report["generation"]["precision"] == "bf16"
    assert "Greedy in bf16" in (tmp_path / "report.md").read_text()

    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    fp32 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    fp32 = fp32.merge_and_unload().eval()
    test_rows = load_from_disk(str(tokenized / "dataset"))["test"].to_list()
    for row, pred in zip(test_rows, preds, strict=True):
        total, count = independent_nll(fp32, row)
        assert pred["scores"]["finetuned"]["nll"] == pytest.approx(total / count, rel=1e-4)
    bf16 = fp32.to(torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for pred in [p for p in preds if "outputs" in p]:
        assert pred["outputs"]["finetuned"] == greedy(bf16, tokenizer, pred["prompt"], 5)
