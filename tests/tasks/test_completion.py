"""The codebase completion benchmark: next-line and FIM cases from held-out records, per-row stopping,
scores and the previous-line baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.common.generation import Completion
from tasks.evaluation import completion as C
from tasks.tokenization.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, add_fim_tokens

CODE = '''@decorator
def scale(values, factor=2):
    """Scale the values.

    x = this line is prose, not code
    """
    # a comment-only line
    out = []

    for value in values:
        if value is None:
            continue
        else:
            out.append(value * factor)
    total = sum(
        out,
    )
    pass
    return total
'''
# the statement lines a next-line case may target (1-based): not the docstring, the comment, blank lines,
# `continue`, `else:`, `)`, `pass`, or the signature
TARGETS = {
    8: "out = []",
    10: "for value in values:",
    11: "if value is None:",
    14: "out.append(value * factor)",
    15: "total = sum(",
    19: "return total",
}


def record(name: str, code: str = CODE, kind: str = "function") -> dict:
    return {"id": f"id-{name}", "name": name, "kind": kind, "code": code}


def everything(_: dict) -> bool:
    return True


def many_records(n: int) -> list[dict]:
    return [
        record(f"m.f{i:02d}", f"def f{i}(x):\n    y = x + {i}\n    z = y * {i}\n    return y - z\n")
        for i in range(n)
    ]


def by_target() -> dict[str, dict]:
    """Every next-line case of CODE, by target (two per seed: enough seeds draw them all)."""
    return {
        c["target"]: c for s in range(40) for c in C.next_line_cases([record("m.scale")], everything, 9, s)
    }


# --- next-line cases ------------------------------------------------------------------------------------


def test_next_line_prefix_ends_at_a_lines_text_and_the_target_is_the_next_code_line():
    lines = CODE.split("\n")
    seen = {}
    for seed in range(40):  # two per record per seed: every eligible line comes up, and nothing else
        cases = C.next_line_cases([record("m.scale")], everything, 10, seed)
        assert len(cases) == 2
        for case in cases:
            line = int(case["task_id"].rsplit("/", 1)[1])
            assert case["task_id"] == f"next_line/m.scale/{line}" and case["kind"] == "next_line"
            assert not case["prefix"].endswith("\n") and case["prefix"] == case["prefix"].rstrip()
            rest = CODE[len(case["prefix"]) :]
            assert CODE.startswith(case["prefix"]) and rest.startswith("\n")
            assert C.first_line(rest).strip() == case["target"] == lines[line - 1].strip()
            assert (case["suffix"], case["record_id"]) == ("", "id-m.scale")
            seen[line] = case["target"]
    assert seen == TARGETS
    # the blank line before the for loop is skipped: the prefix ends at the text of "out = []"
    assert by_target()["for value in values:"]["prefix"].endswith("\n    out = []")


def test_only_held_out_function_and_method_records_give_cases():
    records = [
        record("m.kept"),
        record("m.kept_method", kind="method"),
        record("m.other"),
        record("m.Klass", kind="class"),  # a class's code repeats its methods'
        record("m.broken", "def broken(:\n    return 1\n"),
    ]
    held = {"id-m.kept", "id-m.kept_method", "id-m.Klass", "id-m.broken"}
    for build in (C.next_line_cases, C.fim_cases):
        cases = build(records, lambda r: r["id"] in held, 100, 0)
        assert {c["record_id"] for c in cases} == {"id-m.kept", "id-m.kept_method"}


def test_cases_are_seeded_capped_across_records_and_sorted():
    records = many_records(30)
    for build in (C.next_line_cases, C.fim_cases):
        first = build(records, everything, 12, 3)
        assert first == build(list(reversed(records)), everything, 12, 3)  # input order does not matter
        assert first != build(records, everything, 12, 4)
        assert len(first) == 12 and [c["task_id"] for c in first] == sorted(c["task_id"] for c in first)
        per_record = [c["record_id"] for c in first]
        assert max(per_record.count(r) for r in per_record) <= 2
        # a seeded choice across all records, not the first six in name order
        assert len(set(per_record)) > 6 and max(per_record) > "id-m.f10"
        assert len(build(records, everything, 1000, 3)) == 60


# --- FIM cases and prompts --------------------------------------------------------------------------------


def test_fim_middles_are_short_single_line_code_spans_and_prompts_follow_the_order():
    middles = set()
    for seed in range(30):
        for order in ("psm", "spm"):
            for case in C.fim_cases([record("m.scale")], everything, 10, seed, order):
                p, m, s = case["prefix"], case["target"], case["suffix"]
                assert (
                    p + m + s == CODE
                    and case["order"] == order
                    and case["task_id"].startswith(f"fim/{order}/")
                )
                assert "\n" not in m and len(m) <= 80 and len(m.replace(" ", "")) >= 4
                assert "prose" not in m and "Scale" not in m and m.strip() != "pass"
                middles.add(m)
                layout = {
                    "psm": f"{FIM_PREFIX}{p}{FIM_SUFFIX}{s}{FIM_MIDDLE}",
                    "spm": f"{FIM_PREFIX}{FIM_SUFFIX}{s}{FIM_MIDDLE}{p}",
                }
                assert C.prompt(case) == layout[order]
    assert {"out.append(value * factor)", "value * factor", "value is None", "return total"} <= middles
    with pytest.raises(ValueError, match="psm"):
        C.fim_cases([record("m.scale")], everything, 1, 0, "pms")


def test_two_fim_middles_of_one_record_never_overlap():
    for seed in range(20):
        cases = C.fim_cases([record("m.scale")], everything, 10, seed)
        assert len(cases) == 2
        (a, b), (c, _) = sorted((len(x["prefix"]), len(x["prefix"]) + len(x["target"])) for x in cases)
        assert b <= c


def test_infill_case_is_a_psm_prompt_with_exactly_one_marker():
    case = C.infill_case("def f(x):\n    return <FILL>\n")
    assert C.prompt(case) == f"{FIM_PREFIX}def f(x):\n    return {FIM_SUFFIX}\n{FIM_MIDDLE}"
    for bad in ("no marker", "<FILL> and <FILL>"):
        with pytest.raises(ValueError, match="exactly one <FILL>"):
            C.infill_case(bad)


# --- scores and the baseline ------------------------------------------------------------------------------


def test_scores_hand_computed():
    line = {"kind": "next_line", "target": "return a + b", "prefix": "def f(a, b):", "suffix": ""}
    # the completion's first non-empty line; exact match ignores whitespace runs, edit similarity only the
    # ends (rapidfuzz ratio: 2 * common characters / both lengths)
    got = C.score(line, "\n    return  a +   b\n    x = 1")
    assert got == {"exact_match": 1.0, "edit_similarity": pytest.approx(2 * 12 / 27)}  # 12 of 15 + 12 chars
    got = C.score({**line, "target": "return a"}, "\n\n    return b")
    assert got["exact_match"] == 0.0
    assert got["edit_similarity"] == pytest.approx(2 * 7 / 16)  # Indel: 7 common of 8 + 8 characters
    assert C.score(line, "") == {"exact_match": 0.0, "edit_similarity": 0.0}
    fim = {"kind": "fim", "order": "psm", "target": "x + 1", "prefix": "y = ", "suffix": "\n"}
    assert C.score(fim, " x  + 1 ") == {"exact_match": 1.0, "edit_similarity": pytest.approx(10 / 11)}
    assert C.score(fim, "x + 1\nz") == {"exact_match": 0.0, "edit_similarity": pytest.approx(10 / 12)}
    assert C.score({**fim, "target": ""}, "  ")["edit_similarity"] == 1.0  # both empty
    assert set(C.score(fim, "x")) == set(C.METRICS)


def test_previous_line_baseline_repeats_the_last_non_empty_line():
    cases = by_target()
    assert C.previous_line(cases["for value in values:"]) == "    out = []"
    assert C.previous_line(cases["out = []"]) == "    # a comment-only line"
    assert (
        C.score(cases["if value is None:"], C.previous_line(cases["if value is None:"]))["exact_match"] == 0
    )
    fim = {"kind": "fim", "order": "psm", "prefix": "a = 1\n    b = 2\n\n   \n    ", "target": "b = 2"}
    assert C.previous_line(fim) == "    b = 2"
    assert C.score(fim, C.previous_line(fim))["exact_match"] == 1.0


def test_benchmark_key_follows_the_content_of_the_cases():
    cases = C.next_line_cases(many_records(5), everything, 6, 0)
    key = C.benchmark_key(cases)
    assert key == C.benchmark_key([dict(c) for c in cases])
    changed = [dict(c) for c in cases]
    changed[2]["target"] += " "
    assert C.benchmark_key(changed) != key
    assert C.benchmark_key(cases[:-1]) != key


# --- generation -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    from tasks.common.models import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, load_tokenizer(tiny_model_dir, for_generation=True)


@pytest.mark.parametrize(
    ("text", "done"),
    [
        ("\n", False),
        ("\n    ", False),  # the newline+indent token a prefix at a line's text is followed by
        ("\n    x = 1", False),
        ("\n\n  \n    x", False),
        ("\n    x = 1\n", True),
        ("\n    x = 1\n    ", True),
        ("x\n", True),
    ],
)
def test_a_next_line_row_ends_after_its_first_non_empty_line(text, done):
    assert C.ends_first_line(text) is done


def test_stop_when_ends_one_row_while_the_others_go_on(tiny):
    """The tiny random model repeats itself: "return" -> "turnturn...", "import os" -> "sss..."."""
    from tasks.common.generation import generate

    model, tokenizer = tiny
    free, stopped = generate(
        model, tokenizer, ["import os", "return"], 12, stop_when=lambda t: "turnturn" in t
    )
    assert (free.text, free.new_tokens, free.hit_cap) == ("s" * 12, 12, True)
    assert (stopped.text, stopped.new_tokens, stopped.hit_cap) == ("turnturn", 2, False)
    # reaching the rule on the last token is a stop, not a cut
    (last,) = generate(model, tokenizer, ["return"], 2, stop_when=lambda t: "turnturn" in t)
    assert (last.text, last.hit_cap) == ("turnturn", False)


def test_complete_runs_fim_once_the_tokens_are_added_and_keeps_the_cases_order():
    """A scratch tokenizer trained without the FIM sentinels (as SmolLM2's has none): refused, then, with
    the tokens added and the embeddings grown (what tokenize.fim_rate > 0 does), generated through."""
    from builders import PYTHON_CORPUS, TINY_SCRATCH

    from tasks.base_model.scratch import build_model, train_tokenizer
    from tasks.common.generation import generate

    tokenizer = train_tokenizer([PYTHON_CORPUS] * 4, TINY_SCRATCH.vocab_size, extra=())
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    model = build_model(
        TINY_SCRATCH, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, 0
    ).eval()
    fim = C.fim_cases([record("m.scale")], everything, 2, 0)
    lines = C.next_line_cases([record("m.scale")], everything, 2, 0)
    cases = [fim[0], lines[0], fim[1], lines[1]]
    assert not C.supports_fim(tokenizer)
    with pytest.raises(ValueError, match="fim_rate"):
        C.complete(model, tokenizer, cases, 2, 4)

    add_fim_tokens(tokenizer)
    model.resize_token_embeddings(len(tokenizer))
    assert C.supports_fim(tokenizer)
    ids = tokenizer(C.prompt(fim[0]), add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids(FIM_PREFIX)
    assert ids[-1] == tokenizer.convert_tokens_to_ids(FIM_MIDDLE)
    done = C.complete(model, tokenizer, cases, 2, 4)
    assert len(done) == 4 and all(0 < d.new_tokens <= 4 for d in done)
    # in the cases' order, each generated with its own kind's stopping
    assert done[2] == generate(model, tokenizer, [C.prompt(fim[1])], 4, stop=C.FIM_STOPS)[0]
    assert done[3] == generate(model, tokenizer, [C.prompt(lines[1])], 4, stop_when=C.ends_first_line)[0]


def test_complete_stops_each_kind_its_own_way(monkeypatch):
    calls = []

    def spy(model, tokenizer, prompts, max_new_tokens, batch_size, **options):
        calls.append((prompts, options))
        return [Completion(p[-3:], 1, False) for p in prompts]

    monkeypatch.setattr(C, "generate", spy)
    monkeypatch.setattr(C, "supports_fim", lambda tokenizer: True)
    fim = C.fim_cases([record("m.scale")], everything, 1, 0)
    lines = C.next_line_cases([record("m.scale")], everything, 2, 0)
    done = C.complete(None, None, [lines[0], fim[0], lines[1]], 8, 24)
    assert [d.text for d in done] == [C.prompt(c)[-3:] for c in (lines[0], fim[0], lines[1])]
    assert calls == [
        ([lines[0]["prefix"], lines[1]["prefix"]], {"stop_when": C.ends_first_line}),
        ([C.prompt(fim[0])], {"stop": C.FIM_STOPS}),
    ]


def test_long_contexts_are_cut_at_line_boundaries_near_the_target():
    """A 200-line function: the prefix keeps its last MAX_PREFIX_CHARS from a line start, so prefill stays
    cheap; the target is still the line after it."""
    body = "".join(f"    value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 200))
    code = "def long(value_0):\n" + body + "    return value_199\n"
    cases = C.next_line_cases([record("m.long", code)], everything, 10, seed=0)
    assert cases
    for case in cases:
        assert len(case["prefix"]) <= C.MAX_PREFIX_CHARS
        assert case["prefix"].startswith("    value_") and code.split(case["prefix"], 1)[1].startswith("\n")
        line = int(case["task_id"].rsplit("/", 1)[1])
        assert case["target"] == code.split("\n")[line - 1].strip()
    fim = C.fim_cases([record("m.long", code)], everything, 10, seed=0)
    assert fim and all(len(c["prefix"]) <= C.MAX_PREFIX_CHARS >= len(c["suffix"]) for c in fim)
    assert all(c["suffix"] == "" or code.split(c["target"] + c["suffix"])[0] for c in fim)
