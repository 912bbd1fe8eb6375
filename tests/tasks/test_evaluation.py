"""Tests for tasks.evaluation: ROUGE through the local metric module, per-row likelihood against an
independent computation, text metrics beyond what the prompt gave, and evaluate_models end to end on a
tiny model and a tiny LoRA adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from builders import tokenized_dataset

from pipeline_config.schema import EvaluateConfig, TokenizeConfig
from tasks.common.templates import ALPACA
from tasks.evaluation.compare import evaluate_models
from tasks.evaluation.metrics import beyond_given, edit_similarity, likelihood, per_example_scores, rouge

ROUGE_KEYS = {"rouge1", "rouge2", "rougeL", "rougeLsum"}

# --------------------------------------------------------------------------------------------------------
# rouge
# --------------------------------------------------------------------------------------------------------


def test_rouge_identical_is_one() -> None:
    texts = ["def add(a, b):\n    return a + b", "the quick brown fox jumps"]
    assert rouge(texts, texts) == {k: pytest.approx(1.0) for k in ROUGE_KEYS}


def test_rouge_disjoint_is_zero() -> None:
    assert rouge(["alpha beta gamma"], ["delta epsilon"]) == dict.fromkeys(ROUGE_KEYS, 0.0)


def test_rouge_partial_overlap_hand_computed() -> None:
    # "the cat sat" vs "the cat ran away": unigrams 2 shared -> P 2/3, R 2/4, F 4/7; bigrams {the cat}
    # shared -> P 1/2, R 1/3, F 2/5; LCS "the cat" = 2 -> 4/7. The second pair is identical (all 1.0) and
    # the metric is the mean over pairs.
    got = rouge(["the cat sat", "x y"], ["the cat ran away", "x y"])
    assert got["rouge1"] == pytest.approx((4 / 7 + 1) / 2, abs=1e-6)
    assert got["rouge2"] == pytest.approx((2 / 5 + 1) / 2, abs=1e-6)
    assert got["rougeL"] == pytest.approx((4 / 7 + 1) / 2, abs=1e-6)
    assert got["rougeLsum"] == pytest.approx((4 / 7 + 1) / 2, abs=1e-6)


def test_rouge_lsum_uses_lines() -> None:
    # two lines in swapped order: rougeL (one sequence) sees an LCS of 2 of 4 tokens, rougeLsum (union LCS
    # per reference line) matches both lines fully
    got = rouge(["c d\na b"], ["a b\nc d"])
    assert got["rougeL"] == pytest.approx(0.5, abs=1e-6)
    assert got["rougeLsum"] == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------------------------
# likelihood and written-text metrics
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # as load_tokenizer(for_generation=True)
    return model, tokenizer


def _rows(tokenizer, masked: bool) -> list[dict]:
    rows = []
    for prompt, response in [
        ("def add(a, b):", "\n    return a + b\n"),
        ("def square(x):\n    return", " x * x\n"),
        ("class Counter:", "\n    def __init__(self):\n        self.counts = {}\n"),
    ]:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": p + r, "labels": ([-100] * len(p) if masked else p) + r})
    return rows


def independent_nll(model, row: dict) -> tuple[float, int]:
    """One unpadded row: -log p(token | prefix) summed over its label tokens, and their count."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([row["input_ids"]])).logits[0].double(), dim=-1)
    nll, count = 0.0, 0
    for t in range(1, len(row["input_ids"])):
        if row["labels"][t] != -100:
            nll -= float(logp[t - 1, row["labels"][t]])
            count += 1
    return nll, count


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_likelihood_per_row_matches_independent_computation(tiny, batch_size: int) -> None:
    model, tokenizer = tiny
    rows = _rows(tokenizer, masked=True)
    assert len({len(r["input_ids"]) for r in rows}) == 3  # batches need right padding
    got = likelihood(model, tokenizer, rows, batch_size)
    for row, nll, bpb in zip(rows, got["nll"], got["bits_per_byte"], strict=True):
        total, count = independent_nll(model, row)
        assert nll == pytest.approx(total / count, rel=1e-4)
        # bits per byte: the same total in bits over the bytes the label tokens spell (eos spells none)
        text = tokenizer.decode([t for t in row["labels"] if t != -100], skip_special_tokens=True)
        assert bpb == pytest.approx(total / math.log(2) / len(text.encode()), rel=1e-4)
    assert 4 < sum(got["nll"]) / 3 < 8  # an untrained 512-token model sits near uniform (ln 512 = 6.2)


def test_likelihood_prompt_masking_changes_it(tiny) -> None:
    model, tokenizer = tiny
    masked = likelihood(model, tokenizer, _rows(tokenizer, masked=True), 2)["nll"]
    unmasked = likelihood(model, tokenizer, _rows(tokenizer, masked=False), 2)["nll"]
    assert all(abs(a - b) > 1e-4 for a, b in zip(masked, unmasked, strict=True))


def test_written_text_metrics_give_nothing_for_echoing_the_prompt() -> None:
    """A reference starting with the signature the prompt gave: the echo matches it in full-text ROUGE-L
    with precision 1 but wrote nothing beyond it; a system that wrote the body is credited for it."""
    reference = "def add(a, b):\n    return a + b"
    given = "def add(a, b):"
    got = per_example_scores([given, reference, "return a + b"], [reference] * 3, [given] * 3)
    assert got["rougeL"][0] > 0.6 and got["rougeL_written"][0] == 0.0  # the echo
    assert got["edit_similarity_written"][0] == 0.0
    assert got["rougeL_written"][1] == pytest.approx(1.0) and got["edit_similarity_written"][1] == 1.0
    assert got["rougeL_written"][2] == pytest.approx(1.0)  # only the body: what was asked for
    assert beyond_given("def  add(a,\n b): pass", "def add(a, b):") == " pass"  # whitespace runs differ
    assert beyond_given("x = 1", "def add(a, b):") == "x = 1"  # no prefix: all of it counts
    # the input is the signature without its colon: the rest of the line is what was written
    assert beyond_given("def add(a, b):\n    return a", "def add(a, b)") == ":\n    return a"
    assert beyond_given("def add(a,b):", "def add(a, b)") == "def add(a,b):"  # a space it lacks: no match
    assert beyond_given("def add", "def add(a, b)") == "def add"  # shorter than the input
    assert edit_similarity(["abcd", ""], ["abce", ""]) == [pytest.approx(0.75), 1.0]


# --------------------------------------------------------------------------------------------------------
# evaluate_models
# --------------------------------------------------------------------------------------------------------


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


def greedy(model, tokenizer, prompt: str | list[int], max_new_tokens: int) -> str:
    """Greedy continuation of one prompt (text, or token ids), unbatched and unpadded."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if isinstance(prompt, str) else prompt
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()


def test_generate_truncates_long_prompts_from_the_left(tiny) -> None:
    """A prompt over the position budget loses its oldest tokens: the end ("### Response:") must stay,
    since that is where the model continues from."""
    from tasks.common.generation import generate

    model, tokenizer = tiny
    long_prompt = "Write a Python function `square`. " * 30 + "\n\n### Response:\n"
    short_prompt = "def add(a, b):"
    prompt_ids = tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    cfg = EvaluateConfig(max_new_tokens=5, batch_size=2)
    budget = 40
    assert len(prompt_ids) > budget
    seen: list[torch.Tensor] = []

    class Spy:  # records the token ids that reach model.generate; a context of budget + 5 positions
        device = model.device
        config = SimpleNamespace(max_position_embeddings=budget + cfg.max_new_tokens)

        def generate(self, **kwargs):
            seen.append(kwargs["input_ids"])
            return model.generate(**kwargs)

    got = generate(Spy(), tokenizer, [long_prompt, short_prompt], cfg.max_new_tokens, cfg.batch_size)
    assert prompt_ids[-budget:] in seen[0].tolist()  # the long prompt's row: its last `budget` tokens
    assert tokenizer.decode(prompt_ids[-budget:]).endswith("### Response:\n")
    assert [g.text.strip() for g in got] == [
        greedy(model, tokenizer, prompt_ids[-budget:], 5),
        greedy(model, tokenizer, short_prompt, 5),
    ]


def test_evaluate_models_end_to_end(
    tmp_path_factory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model_dir: Path,
    adapter_dir: Path,
    tiny,
) -> None:
    from datasets import load_from_disk

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU fp32, as the references

    tokenized, _ = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 20, TokenizeConfig(max_length=200), seed=0
    )
    test_rows = load_from_disk(str(tokenized / "dataset"))["test"].to_list()
    assert len(test_rows) > 4  # max_samples takes the first 4 of the (shuffled) held-out rows
    cfg = EvaluateConfig(max_samples=4, max_new_tokens=6, batch_size=3)  # 4 rows: a full and a ragged batch
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

    model, tokenizer = tiny
    fresh_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # PeftModel edits its base in place
    finetuned = PeftModel.from_pretrained(fresh_base, adapter_dir).eval()
    assert len({len(p["prompt"]) for p in generated}) > 1  # prompts of several lengths: padding is exercised
    for pred in generated:
        assert pred["outputs"]["base"] == greedy(model, tokenizer, pred["prompt"], 6)
        with finetuned.disable_adapter():
            assert pred["outputs"]["base"] == greedy(finetuned, tokenizer, pred["prompt"], 6)
        assert pred["outputs"]["finetuned"] == greedy(finetuned, tokenizer, pred["prompt"], 6)

    assert set(report) == {"rows_in", "rows_out", "suites", "means", "generation"}
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
    cfg = EvaluateConfig(max_samples=2, max_new_tokens=4, batch_size=2)
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


def test_bootstrap_interval_narrows_with_more_examples_and_is_seeded():
    from tasks.evaluation.metrics import bootstrap_ci

    few = [0.0, 1.0] * 5
    many = [0.0, 1.0] * 200
    low_few, high_few = bootstrap_ci(few, seed=0)
    low_many, high_many = bootstrap_ci(many, seed=0)
    assert low_few < 0.5 < high_few and low_many < 0.5 < high_many
    assert high_many - low_many < (high_few - low_few) / 3  # ~1/sqrt(n): 40x the data, ~6x narrower
    assert bootstrap_ci(few, seed=0) == [low_few, high_few]  # seeded: the same report every run
    assert bootstrap_ci([0.3] * 7) == [pytest.approx(0.3), pytest.approx(0.3)]


def test_exact_match_ignores_whitespace_runs_only():
    from tasks.evaluation.metrics import exact_match

    assert exact_match(
        ["def f():\n  return 1", "x=1", "X = 1"], ["def f():\n    return 1 ", "x = 1", "x = 1"]
    ) == [
        1.0,
        0.0,
        0.0,
    ]


def test_generate_ends_each_row_at_a_stop_sequence_and_counts_tokens(tiny) -> None:
    """The tiny random model repeats itself: "import os" -> "sss...", "return" -> "turnturn...",
    "class Counter:" -> "::::..."."""
    from tasks.common.generation import generate

    model, tokenizer = tiny
    free, stopped, straddling = generate(
        model, tokenizer, ["import os", "return", "class Counter:"], 12, stop=["turn", "::"]
    )
    assert (free.text, free.new_tokens, free.hit_cap) == ("s" * 12, 12, True)  # ran on to the cap
    assert (stopped.text, stopped.new_tokens, stopped.hit_cap) == ("", 1, False)  # its row ended at once
    # "::" begins with the prompt's last ":": generation stops after one token and keeps nothing of it
    assert (straddling.text, straddling.new_tokens, straddling.hit_cap) == ("", 1, False)
    assert generate(model, tokenizer, ["return"], 3)[0].text == "turn" * 3  # without stop sequences


def test_new_token_budget_follows_the_references(tiny) -> None:
    from tasks.evaluation.compare import new_token_budget

    _, tokenizer = tiny
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
