"""Per-item metrics (tasks/evaluation/metrics.py): ROUGE through the local metric module, per-row likelihood
against an independent computation, text metrics beyond what the prompt gave, exact match and the bootstrap
interval of a mean."""

from __future__ import annotations

import math

import pytest

from tasks.evaluation.metrics import beyond_given, edit_similarity, likelihood, per_example_scores, rouge
from tests.tasks.lm_references import independent_nll

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


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_likelihood_per_row_matches_independent_computation(tiny_lm, batch_size: int) -> None:
    model, tokenizer = tiny_lm
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


@pytest.mark.parametrize("position_mask", [True, False])
def test_likelihood_projects_only_the_scored_positions_where_the_model_can(
    tiny_lm, monkeypatch, position_mask: bool
) -> None:
    """A transformers model gets the scored positions as `logits_to_keep` and its LM head runs on those
    alone; a model that cannot slice (remote code) gets the full head, and both give the same figures."""
    from tasks.evaluation import metrics

    model, tokenizer = tiny_lm
    rows = _rows(tokenizer, masked=True)
    monkeypatch.setattr(metrics, "takes_position_mask", lambda m: position_mask)
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    got = likelihood(model, tokenizer, rows, 3)
    hook.remove()
    scored = sum(sum(t != -100 for t in r["labels"][1:]) for r in rows)
    assert head_rows == [scored if position_mask else 3 * max(len(r["input_ids"]) for r in rows)]
    for row, nll in zip(rows, got["nll"], strict=True):
        total, count = independent_nll(model, row)
        assert nll == pytest.approx(total / count, rel=1e-4)


def test_likelihood_prompt_masking_changes_it(tiny_lm) -> None:
    model, tokenizer = tiny_lm
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
# exact match and the bootstrap interval
# --------------------------------------------------------------------------------------------------------


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
