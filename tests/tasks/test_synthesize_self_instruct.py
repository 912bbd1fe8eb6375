"""tasks.synthesize.self_instruct: the shipped seed tasks (which pass their own tests in the sandbox), the
in-context mix of seed and generated tasks, and the loop with a scripted teacher: parsed, filtered,
verified, the pool growing across rounds, seeded, truncated replies keeping their complete tasks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from synthesize_fakes import (
    BLACKLISTED,
    GARBAGE,
    LIST_CUT,
    MERGE,
    NEAR_DUPLICATE,
    NOVEL,
    NOVEL_CHAT,
    SEED_TASKS_FIXTURE,
    VERIFY,
    WRONG_TESTS,
    FakeTeacher,
    scrape_dir,
    si_config,
    write_seed_tasks,
)

from pipeline_config.schema import SelfInstructConfig, SynthesizeConfig
from tasks.synthesize.pairs import synthesize_pairs
from tasks.synthesize.self_instruct import SEED_TASKS, load_seed_tasks, pick_examples, self_instruct
from tasks.synthesize.verify import precheck, verify


def test_shipped_seed_tasks() -> None:
    seeds = load_seed_tasks(SEED_TASKS)
    assert len(seeds) >= 25
    assert len({s["id"] for s in seeds}) == len(seeds)
    assert len({s["instruction"] for s in seeds}) == len(seeds)
    assert sum("sklearn" in s["output"] + s["tests"] for s in seeds) >= 5
    for s in seeds:
        assert precheck(s["output"], s["tests"]) is None, s["id"]  # parse, assert, use the solution


def test_pure_python_seed_tasks_pass_their_tests_in_the_sandbox() -> None:
    seeds = [s for s in load_seed_tasks(SEED_TASKS) if "sklearn" not in s["output"] + s["tests"]]
    verdicts = verify([(s["output"], s["tests"]) for s in seeds], VERIFY)
    assert [v.kind for v in verdicts] == ["passed"] * len(seeds)


@pytest.mark.slow
def test_scikit_learn_seed_tasks_pass_their_tests_in_the_sandbox() -> None:
    seeds = [s for s in load_seed_tasks(SEED_TASKS) if "sklearn" in s["output"] + s["tests"]]
    verdicts = verify([(s["output"], s["tests"]) for s in seeds], VERIFY.model_copy(update={"timeout_s": 60}))
    assert [(s["id"], v.kind) for s, v in zip(seeds, verdicts, strict=True)] == [
        (s["id"], "passed") for s in seeds
    ]


def test_seed_tasks_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"id": "a", "instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"task 1 .* lacks \['tests'\]"):
        load_seed_tasks(path)
    path.write_text("")
    with pytest.raises(ValueError, match="holds no tasks"):
        load_seed_tasks(path)


def test_pick_examples_mixes_seed_and_generated_as_self_instruct() -> None:
    import random

    seeds = [{"id": f"s{i}"} for i in range(30)]
    generated = [{"id": f"g{i}"} for i in range(5)]
    rng = random.Random(0)
    mix = pick_examples(rng, seeds, generated, 8)
    assert sorted(e["id"][0] for e in mix) == ["g"] * 2 + ["s"] * 6  # 6 seed + 2 generated of 8
    assert len({e["id"] for e in mix}) == 8
    assert [e["id"][0] for e in pick_examples(rng, seeds, [], 8)] == ["s"] * 8
    assert sorted(e["id"][0] for e in pick_examples(rng, seeds, generated, 3)) == ["g", "s", "s"]
    assert sorted(e["id"][0] for e in pick_examples(rng, seeds, generated[:1], 16)) == ["g"] + ["s"] * 15


def test_self_instruct_parses_filters_verifies(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    replies = [NOVEL, NEAR_DUPLICATE, GARBAGE, WRONG_TESTS, BLACKLISTED, NOVEL_CHAT, None]
    teacher = FakeTeacher([replies])
    kept, counts, filtered = self_instruct(teacher, si_config(seed_file), VERIFY, seed=0)
    assert [k["instruction"] for k in kept] == [
        "Merge two sorted lists into one sorted list without using sort.",
        "Return the number of distinct words in a text, ignoring case.",
    ]
    assert counts["prompts"] == 7 and counts["generated"] == 6 and counts["not_produced"] == 1
    assert counts["unparseable"] == 1 and counts["kept"] == 2
    assert {k: v for k, v in filtered.counts.items() if v} == {
        "blacklisted": 1,
        "assertion": 1,
        "too_similar": 1,
    }
    reasons = {r["reason"]: r for r in filtered.rejected}
    assert reasons["too_similar"]["detail"]["similar_to"] == SEED_TASKS_FIXTURE[0]["instruction"]
    assert reasons["too_similar"]["detail"]["rougeL"] > 0.7
    assert reasons["assertion"]["detail"]["error"].startswith("AssertionError")
    assert reasons["unparseable"]["reply"] == GARBAGE

    task = kept[0]
    assert task["source"] == "self_instruct" and task["id"].startswith("self_instruct-")
    assert task["input"] == "a = [1, 3], b = [2]" and task["output"] == MERGE
    meta = task["metadata"]
    assert meta["mode"] == "self_instruct" and meta["round"] == 0
    assert meta["tests"] == "assert merge([1, 3], [2]) == [1, 2, 3]"
    assert meta["verified"] is True and meta["verification"] == "passed"
    assert len(meta["examples"]) == 2 and set(meta["examples"]) <= {"s1", "s2", "s3"}

    # the prompts: examples_per_prompt "### Task N" blocks from the pool, then the open next task
    for prompt in teacher.prompts[0]:
        assert re.findall(r"^### Task (\d+)$", prompt, re.MULTILINE) == ["1", "2", "3"]
        assert prompt.endswith("### Task 3\nInstruction:")
        shown = re.findall(r"^Instruction: (.+)$", prompt, re.MULTILINE)
        assert len(set(shown)) == 2 and set(shown) <= {t["instruction"] for t in SEED_TASKS_FIXTURE}
        assert prompt.count("Tests:\n```python\nassert ") == 2


def test_self_instruct_keep_all_marks_verified(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    teacher = FakeTeacher([[NOVEL, WRONG_TESTS]])
    cfg = VERIFY.model_copy(update={"keep": "all"})
    kept, counts, _ = self_instruct(teacher, si_config(seed_file, prompts_per_round=2), cfg, seed=0)
    assert [(k["metadata"]["verified"], k["metadata"]["verification"]) for k in kept] == [
        (True, "passed"),
        (False, "assertion"),
    ]
    assert counts["kept"] == 2


def test_self_instruct_pool_grows_across_rounds(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    # round 2 repeats round 1's new task: it is now in the pool, so it is too similar; and round 2's prompt
    # shows it among the examples (generated tasks join the in-context mix)
    teacher = FakeTeacher([[NOVEL], [NOVEL]])
    kept, counts, filtered = self_instruct(
        teacher, si_config(seed_file, num_rounds=2, prompts_per_round=1), VERIFY, seed=0
    )
    assert [k["metadata"]["round"] for k in kept] == [0]
    assert filtered.counts["too_similar"] == 1
    assert "Merge two sorted lists" in teacher.prompts[1][0]


def test_self_instruct_failed_verification_does_not_join_the_pool(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    broken = NOVEL.replace("== [1, 2, 3]", "== [3, 2, 1]")
    teacher = FakeTeacher([[broken, NOVEL]])
    kept, _, filtered = self_instruct(teacher, si_config(seed_file, prompts_per_round=2), VERIFY, seed=0)
    assert len(kept) == 1 and kept[0]["metadata"]["tests"].endswith("[1, 2, 3]")
    assert filtered.counts["assertion"] == 1 and filtered.counts["too_similar"] == 0


def test_self_instruct_is_seeded(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    cfg = si_config(seed_file, prompts_per_round=4)
    a, b, c = (FakeTeacher([[GARBAGE] * 4]) for _ in range(3))
    self_instruct(a, cfg, VERIFY, seed=0)
    self_instruct(b, cfg, VERIFY, seed=0)
    self_instruct(c, cfg, VERIFY, seed=1)
    assert a.prompts == b.prompts
    assert a.prompts != c.prompts


def test_self_instruct_default_seed_tasks() -> None:
    teacher = FakeTeacher([[GARBAGE]])
    cfg = SelfInstructConfig(num_rounds=1, prompts_per_round=1, examples_per_prompt=3)
    _, counts, _ = self_instruct(teacher, cfg, VERIFY, seed=0)
    assert (counts["generated"], counts["unparseable"], counts["kept"]) == (1, 1, 0)
    assert re.findall(r"^### Task (\d+)$", teacher.prompts[0][0], re.MULTILINE) == ["1", "2", "3", "4"]


def test_self_instruct_truncated_replies_keep_their_complete_tasks(tmp_path: Path) -> None:
    """max_new_tokens reached: in a list of tasks (the complete ones kept, the cut one counted) and in the
    middle of the only task's code (counted, never run in the sandbox as a syntax error)."""
    seed_file = write_seed_tasks(tmp_path)
    list_cut = NOVEL + LIST_CUT.split("\n\n", 1)[1]  # Merge ..., then Sort ..., then "Count the vowels of"
    cut_code = "Compute the running maximum of a list.\nSolution:\n```python\ndef running_max(xs):\n    out ="
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=si_config(seed_file, prompts_per_round=3),
        verify=VERIFY,
    )
    out = tmp_path / "out"
    out.mkdir()
    teacher = FakeTeacher([[list_cut, cut_code, GARBAGE]])
    report = synthesize_pairs(scrape_dir(tmp_path), out, cfg, teacher, seed=0)
    si = report["self_instruct"]
    assert (si["generated"], si["parsed"], si["truncated"], si["unparseable"], si["kept"]) == (3, 2, 2, 1, 2)
    assert si["verification"]["checked"] == 2 and si["verification"]["failures"]["syntax_error"] == 0
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [
        "Merge two sorted lists into one sorted list without using sort.",
        "Sort numbers in descending order.",
    ]
    assert rows[0]["metadata"]["examples"] == rows[1]["metadata"]["examples"]  # from one reply
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["truncated", "truncated", "unparseable"]
    cut = [r for r in rejected if r["reason"] == "truncated"]
    assert {r["reply"] for r in cut} == {list_cut, cut_code}
    assert [r["piece"] for r in cut if "piece" in r] == ["### Task 5\nInstruction: Count the vowels of"]
