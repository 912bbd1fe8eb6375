"""tasks.synthesize.pairs: the pairs of every generator together, with an OpenAI-compatible teacher on the
fake chat server (tests/fake_chat.py) or a scripted one, counts per generator and filter in the report, and
a run that keeps too few named with its cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthesize_fakes import (
    GARBAGE,
    NOVEL,
    OSS_REPLY,
    VERIFY,
    WRONG_TESTS,
    FakeTeacher,
    cycling,
    scrape_dir,
    si_config,
    write_seed_tasks,
)

from pipeline_config.schema import OssInstructConfig, SelfInstructConfig, SynthesizeConfig, TeacherConfig
from tasks.common.teacher.remote import RemoteTeacher
from tasks.synthesize.pairs import TooFewRecords, synthesize_pairs


def test_synthesize_pairs_with_openai_teacher(tmp_path: Path, fake_chat) -> None:
    seed_file = write_seed_tasks(tmp_path)
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    records = scrape_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    teacher_cfg = TeacherConfig(
        backend="openai",
        base_url=chat_server.url,
        model="served-model",
        temperature=0.2,
        max_new_tokens=64,
        max_retries=0,
        timeout_s=10,
    )
    cfg = SynthesizeConfig(
        max_docstring_pairs=2,
        self_instruct=SelfInstructConfig(
            num_rounds=1, prompts_per_round=3, examples_per_prompt=2, seed_tasks=str(seed_file)
        ),
        verify=VERIFY,
        teacher=teacher_cfg,
    )
    teacher = RemoteTeacher(teacher_cfg)
    try:
        report = synthesize_pairs(records, out, cfg, teacher, seed=0)
    finally:
        teacher.close()

    # server answers NOVEL, GARBAGE, NOVEL: kept, unparseable, then too similar to the one just kept
    si = report["self_instruct"]
    assert (report["rows_in"], report["rows_out"]) == (3, 3)
    assert report["by_source"] == {"docstring": 2, "self_instruct": 1}
    assert (si["prompts"], si["generated"], si["unparseable"], si["parsed"], si["kept"]) == (3, 3, 1, 2, 1)
    assert si["rejected"]["too_similar"] == 1 and si["keep_rate"] == round(1 / 3, 4)
    # both parsed tasks ran (the duplicate passes too: novelty comes after verification)
    assert si["verification"] == {
        "checked": 2,
        "passed": 2,
        "pass_rate": 1.0,
        "failures": {"no_tests": 0, "syntax_error": 0, "timeout": 0, "assertion": 0, "crash": 0},
    }
    assert report["oss_instruct"] == {"enabled": False}
    assert report["teacher"]["backend"] == "openai"
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["docstring", "docstring", "self_instruct"]
    assert rows[2]["instruction"] == "Merge two sorted lists into one sorted list without using sort."
    assert set(rows[2]) == {"id", "instruction", "input", "output", "source", "metadata"}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["too_similar", "unparseable"]

    assert len(chat_server.calls) == 3
    for call in chat_server.calls:
        assert call.path == "/v1/chat/completions"
        assert call.body["model"] == "served-model"
        (message,) = call.body["messages"]
        assert message["role"] == "user"
        assert message["content"].startswith("Here are some Python programming tasks")
        assert message["content"].endswith("### Task 3\nInstruction:")


def test_synthesize_pairs_oss_instruct_mode(tmp_path: Path) -> None:
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=SelfInstructConfig(enabled=False),
        oss_instruct=OssInstructConfig(enabled=True, num_prompts=2),
        verify=VERIFY.model_copy(update={"keep": "all"}),
    )
    report = synthesize_pairs(
        scrape_dir(tmp_path), tmp_path, cfg, FakeTeacher([[OSS_REPLY, GARBAGE]]), seed=0
    )
    assert report["by_source"] == {"oss_instruct": 1}
    assert report["oss_instruct"]["verification"]["passed"] == 1
    assert report["self_instruct"] == {"enabled": False}


def test_synthesize_pairs_without_teacher_modes(tmp_path: Path) -> None:
    cfg = SynthesizeConfig(self_instruct=SelfInstructConfig(enabled=False))
    report = synthesize_pairs(scrape_dir(tmp_path), tmp_path, cfg, None, seed=0)
    assert report == {
        "rows_in": 3,
        "rows_out": 3,
        "by_source": {"docstring": 3},
        "self_instruct": {"enabled": False},
        "oss_instruct": {"enabled": False},
        "verify": None,
        "teacher": None,
    }
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 3


def test_too_few_records_names_the_cause_and_counts(tmp_path: Path) -> None:
    seed_file = write_seed_tasks(tmp_path)
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=si_config(seed_file, prompts_per_round=3),
        verify=VERIFY,
        min_records=2,
    )
    teacher = FakeTeacher([[GARBAGE, GARBAGE, WRONG_TESTS]])
    with pytest.raises(TooFewRecords) as caught:
        synthesize_pairs(scrape_dir(tmp_path), tmp_path, cfg, teacher, seed=0)
    message = str(caught.value)
    assert "synthesize kept 0 pairs, fewer than synthesize.min_records (2)" in message
    assert "most were lost to unparseable" in message
    assert "docstring pairs are off" in message and "oss_instruct is off" in message
    assert (
        "self_instruct kept 0 of 3 replies to 3 prompts (not produced 0, unparseable 2, assertion 1)"
        in message
    )
