"""tasks.synthesize.oss_instruct: prompts seeded with windows of scraped code (their provenance kept), and a
scripted teacher's replies parsed, counted when cut, verified and kept."""

from __future__ import annotations

import textwrap

import pytest
from synthesize_fakes import GARBAGE, OSS_REPLY, RECORDS, VERIFY, FakeTeacher

from pipeline_config.schema import OssInstructConfig
from tasks.synthesize.oss_instruct import oss_instruct, oss_instruct_prompt, snippet


def test_snippet_window_and_provenance() -> None:
    import random

    record = {
        **RECORDS[0],
        "code": "def f(x):\n    a = x + 1\n    b = a * 2\n    return b\n",
        "line_start": 10,
    }
    for seed in range(20):
        got = snippet(record, random.Random(seed), 2, 3)
        assert got is not None
        first, last = got["lines"]
        assert 2 <= last - first + 1 <= 3 and 10 <= first and last <= 13
        original = record["code"].splitlines()[first - 10 : last - 10 + 1]
        assert got["code"] == textwrap.dedent("\n".join(original))  # the window, dedented
        assert not got["code"].startswith(" ")
        assert (got["record_id"], got["path"]) == ("rec-row-norms", "sklearn/utils/extmath.py")
    assert snippet({**record, "code": "# only\n# comments\n"}, random.Random(0), 1, 2) is None


def test_oss_instruct_seeds_prompts_with_scraped_code_and_keeps_provenance() -> None:
    teacher = FakeTeacher([[OSS_REPLY, GARBAGE, None]])
    cfg = OssInstructConfig(enabled=True, num_prompts=3, min_lines=1, max_lines=15)
    kept, counts, filtered = oss_instruct(teacher, RECORDS, cfg, VERIFY, seed=0)
    assert (counts["prompts"], counts["generated"], counts["not_produced"], counts["unparseable"]) == (
        3,
        2,
        1,
        1,
    )
    assert len(kept) == 1
    row = kept[0]
    assert row["source"] == "oss_instruct" and row["instruction"].startswith("Compute the Euclidean norm")
    meta = row["metadata"]
    assert meta["mode"] == "oss_instruct" and meta["verified"] is True
    record = next(r for r in RECORDS if r["id"] == meta["seed_record"])
    assert meta["path"] == record["path"] and meta["qualname"] == record["name"]
    first, last = meta["lines"]
    assert record["line_start"] <= first <= last < record["line_start"] + len(record["code"].splitlines())
    assert 1 <= last - first + 1 <= 15
    # every prompt shows its snippet in a code fence and asks for the three sections
    for prompt in teacher.prompts[0]:
        assert "[Problem Description]" in prompt and "[Solution]" in prompt and "[Tests]" in prompt
    assert f"```python\n{meta['seed_snippet']}\n```" in teacher.prompts[0][0]
    assert oss_instruct_prompt("x = 1").endswith("[Problem Description]\n")


def test_oss_instruct_counts_a_cut_reply_and_ignores_a_next_snippet() -> None:
    cut = OSS_REPLY[: OSS_REPLY.index("[Tests]") + len("[Tests]\n```python\nassert row_norms([[3")]
    # a completion model going on with a snippet of its own: not scraped code, so not a seed of ours
    more = OSS_REPLY + "\n\nCode snippet for inspiration:\n```python\nx = 1\n```\n[Problem Description]\nA"
    teacher = FakeTeacher([[cut, more]])
    cfg = OssInstructConfig(enabled=True, num_prompts=2, min_lines=1, max_lines=15)
    kept, counts, filtered = oss_instruct(teacher, RECORDS, cfg, VERIFY, seed=0)
    assert (counts["generated"], counts["parsed"], counts["truncated"], counts["unparseable"]) == (2, 1, 1, 0)
    assert len(kept) == 1 and kept[0]["instruction"].startswith("Compute the Euclidean norm")
    assert [r["reason"] for r in filtered.rejected] == ["truncated"]


def test_oss_instruct_without_code_is_an_error() -> None:
    cfg = OssInstructConfig(enabled=True, num_prompts=1)
    with pytest.raises(ValueError, match="scraped code"):
        oss_instruct(FakeTeacher([]), [{**RECORDS[0], "code": ""}], cfg, VERIFY, seed=0)
