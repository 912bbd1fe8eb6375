"""tasks.synthesize, the stage as the flow runs it: the teacher cache across reruns and upstream changes,
the teacher's accounting and the sandbox in the report, budget caps and kills paid for once, the teacher
closed after use; and the default local teacher (SmolLM2) for real."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from synthesize_fakes import GARBAGE, NOVEL, USAGE, cycling, scrape_output

from pipeline_config import PipelineConfig, load_config
from pipeline_config.schema import SandboxConfig
from tasks import synthesize
from tasks.common.io import workspace_path
from tasks.common.stage import cached_output, read_report
from tasks.common.teacher import TeacherError, make_teacher
from tasks.common.teacher.cache import CallCache
from tests.fake_chat import FakeChatServer

REPO = Path(__file__).resolve().parents[2]


def stage_config(tiny_profile, server: FakeChatServer, **teacher: object) -> PipelineConfig:
    """tiny.yaml with Self-Instruct asking the fake chat server 4 prompts, one request at a time."""

    def edit(raw: dict) -> None:
        raw["synthesize"] = {
            "max_docstring_pairs": 2,
            # the shipped seed tasks: four prompts that all differ
            "self_instruct": {"num_rounds": 1, "prompts_per_round": 4, "examples_per_prompt": 2},
            "verify": {"timeout_s": 20, "workers": 2},
            "teacher": {
                "backend": "openai",
                "base_url": server.url,
                "model": "served-model",
                "temperature": 0.2,
                "max_new_tokens": 64,
                "max_retries": 0,
                "timeout_s": 10,
                "max_concurrency": 1,
                **teacher,
            },
        }

    return load_config(tiny_profile(edit))


@pytest.fixture
def made_teachers(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every teacher the synthesize stage makes, with `closed` set once the stage has closed it."""
    made = []

    def spy(*args, **kwargs):
        teacher = make_teacher(*args, **kwargs)
        close, teacher.closed = teacher.close, False

        def closing() -> None:
            teacher.closed = True
            close()

        teacher.close = closing
        made.append(teacher)
        return teacher

    monkeypatch.setattr(synthesize, "make_teacher", spy)
    return made


def test_stage_rerun_asks_the_teacher_nothing(
    tmp_path: Path, fake_chat, tiny_profile, made_teachers: list
) -> None:
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    cfg = stage_config(tiny_profile, chat_server)
    scrape = scrape_output(tmp_path)
    first = synthesize.SPEC.build(cfg, {"scrape": scrape})
    assert first.status == "executed" and len(chat_server.calls) == 4
    assert CallCache(workspace_path(cfg) / "teacher_cache").count() == 4
    assert read_report(first)["teacher"]["requests"] == 4

    # forced (the nightly run over unchanged sources), then an upstream change that re-keys the stage
    forced = synthesize.SPEC.build(cfg, {"scrape": scrape}, force=True)
    rekeyed = synthesize.SPEC.build(cfg, {"scrape": replace(scrape, key="another-scrape")})
    assert forced.status == rekeyed.status == "executed" and rekeyed.key != first.key
    assert len(chat_server.calls) == 4  # not one new request
    pairs = (Path(first.path) / "pairs.jsonl").read_text()
    for out in (forced, rekeyed):
        teacher = read_report(out)["teacher"]
        counts = {k: teacher[k] for k in ("prompts", "cache_hits", "requests", "produced")}
        assert counts == {"prompts": 4, "cache_hits": 4, "requests": 0, "produced": 0}
        assert (Path(out.path) / "pairs.jsonl").read_text() == pairs  # the same data, for free
    assert len(made_teachers) == 3 and all(t.closed for t in made_teachers)


def test_stage_without_the_teacher_cache_asks_again(tmp_path: Path, fake_chat, tiny_profile) -> None:
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    cfg = stage_config(tiny_profile, chat_server, cache=False)
    scrape = scrape_output(tmp_path)
    synthesize.SPEC.build(cfg, {"scrape": scrape})
    synthesize.SPEC.build(cfg, {"scrape": scrape}, force=True)
    assert len(chat_server.calls) == 8 and not (workspace_path(cfg) / "teacher_cache").exists()


def test_stage_report_holds_the_teacher_accounting(
    tmp_path: Path, fake_chat, tiny_profile, made_teachers: list
) -> None:
    # prompt 1: a 503, retried; prompt 2: a 500 twice, given up; prompts 3 and 4: answered
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL, errors={0: 503, 2: 500, 3: 500}))
    cfg = stage_config(tiny_profile, chat_server, max_retries=1)
    out = synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    report = read_report(out)
    usage = USAGE
    assert report["teacher"] | {"seconds": None} == {
        "backend": "openai",
        "model": "served-model",  # never the URL: it may hold a password
        "prompts": 4,
        "cache_hits": 0,
        "produced": 3,
        "failed": 1,
        "failures": {"http_500": 1},
        "skipped": 0,
        "requests": 6,
        "retries": 2,
        "prompt_tokens": 3 * usage["prompt_tokens"],
        "completion_tokens": 3 * usage["completion_tokens"],
        "seconds": None,
        "stopped": None,
        "caps": {},
    }
    assert report["teacher"]["seconds"] >= 0
    assert report["self_instruct"]["not_produced"] == 1 and report["self_instruct"]["generated"] == 3
    assert made_teachers[0].closed
    # the same figures for people: report.md, the stage's Prefect artifact
    text = (Path(out.path) / "report.md").read_text()
    si = report["self_instruct"]
    assert f"| self_instruct | 4 | 3 | {si['unparseable']} | {si['truncated']} | {si['parsed']} |" in text
    assert "prompts 4, cache_hits 0, requests 6, retries 2, failed 1, skipped 0" in text
    assert "| oss_instruct | off |" in text


def test_stage_report_names_the_sandbox_that_ran_the_teachers_code(
    tmp_path: Path, fake_chat, tiny_profile
) -> None:
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    # userns forced: what an ordinary user's machine (or a container's root) runs; auto here picks root
    cfg = stage_config(tiny_profile, chat_server).model_copy(
        update={"sandbox": SandboxConfig(backend="userns")}
    )
    out = synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    report = read_report(out)
    assert report["sandbox"]["backend"] == "userns" and report["self_instruct"]["verification"]["checked"] > 0
    assert (
        "Sandbox `userns`: userns: an unprivileged user namespace"
        in (Path(out.path) / "report.md").read_text()
    )


def test_stage_without_a_sandbox_fails_before_asking_the_teacher(
    tmp_path: Path, fake_chat, tiny_profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    from tasks.common import sandbox

    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} in this test")
    cfg = stage_config(tiny_profile, chat_server)
    with pytest.raises(sandbox.SandboxUnavailable, match="sandbox.backend: none"):
        synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    assert chat_server.calls == []


def test_stage_stopped_by_a_budget_cap_then_rerun_pays_only_the_rest(
    tmp_path: Path, fake_chat, tiny_profile
) -> None:
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL))
    scrape = scrape_output(tmp_path)
    capped = stage_config(tiny_profile, chat_server, max_requests=2)
    report = read_report(synthesize.SPEC.build(capped, {"scrape": scrape}))
    teacher = report["teacher"]
    counts = {k: teacher[k] for k in ("stopped", "requests", "produced", "skipped")}
    assert counts == {"stopped": "max_requests", "requests": 2, "produced": 2, "skipped": 2}
    assert teacher["caps"] == {"max_requests": 2} and report["self_instruct"]["not_produced"] == 2
    paid = chat_server.prompts()

    lifted = stage_config(tiny_profile, chat_server)  # the cap lifted: a new key
    report = read_report(synthesize.SPEC.build(lifted, {"scrape": scrape}))
    assert len(chat_server.calls) == 4 and not set(chat_server.prompts()[2:]) & set(paid)
    teacher = report["teacher"]
    assert (teacher["cache_hits"], teacher["requests"], teacher["stopped"]) == (2, 2, None)
    assert report["self_instruct"]["generated"] == 4


def test_stage_killed_midway_then_rerun_pays_only_the_rest(
    tmp_path: Path, fake_chat, tiny_profile, made_teachers: list
) -> None:
    # the third request is refused (a revoked key): the stage dies; the rerun's requests are answered
    chat_server = fake_chat(cycling(NOVEL, GARBAGE, NOVEL, errors={2: 401}))
    cfg = stage_config(tiny_profile, chat_server)
    scrape = scrape_output(tmp_path)
    with pytest.raises(TeacherError, match="401"):
        synthesize.SPEC.build(cfg, {"scrape": scrape})
    assert made_teachers[0].closed  # on failure too
    key = synthesize.SPEC.key(cfg, {"scrape": scrape.key})
    assert cached_output(workspace_path(cfg), "synthesize", key) is None  # nothing published
    killed = chat_server.prompts()
    assert len(killed) == 3

    out = synthesize.SPEC.build(cfg, {"scrape": scrape})
    resumed = chat_server.prompts()[3:]
    assert len(resumed) == 2 and resumed[0] == killed[2]  # the refused one and the one never asked
    assert not set(resumed) & set(killed[:2])  # the two answered before the kill are not bought again
    assert read_report(out)["teacher"]["cache_hits"] == 2


@pytest.mark.slow
def test_local_smollm2_teacher_self_instruct(tmp_path: Path, smollm2_stage) -> None:
    """The default local teacher for real: SmolLM2-135M-Instruct (the offline profile's base model, built
    once per session from its GGUF file), asked through its chat template for 3 tasks."""
    import yaml

    raw = yaml.safe_load((REPO / "pipeline_config" / "offline.yaml").read_text())
    raw["workspace"] = str(tmp_path / "ws")
    raw["synthesize"] = {
        "max_docstring_pairs": 2,
        "self_instruct": {"num_rounds": 1, "prompts_per_round": 3, "examples_per_prompt": 2},
        "verify": {"timeout_s": 20, "workers": 2},
        "teacher": {"backend": "local", "model": "base", "max_new_tokens": 128},
    }
    (tmp_path / "offline.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "offline.yaml")
    inputs = {"scrape": scrape_output(tmp_path), "base_model": smollm2_stage[1]}
    out = synthesize.SPEC.build(cfg, inputs)
    report = read_report(out)

    si, teacher = report["self_instruct"], report["teacher"]
    assert (si["prompts"], si["not_produced"], si["generated"]) == (3, 0, 3)
    # every reply is accounted for: tasks parsed from it, or pieces counted with a reason
    assert si["parsed"] + si["unparseable"] + si["truncated"] >= 3
    assert si["parsed"] == sum(si["rejected"].values()) + si["kept"]
    assert report["by_source"].get("self_instruct", 0) == si["kept"]
    rejected = [json.loads(line) for line in (Path(out.path) / "rejected.jsonl").read_text().splitlines()]
    reasons = [r["reason"] for r in rejected]
    assert reasons.count("unparseable") == si["unparseable"] and reasons.count("truncated") == si["truncated"]
    assert len(rejected) == si["unparseable"] + si["truncated"] + sum(si["rejected"].values())
    # the teacher's accounting adds up: 3 completions generated, nothing cached, nothing capped
    assert (teacher["backend"], teacher["model"], teacher["prompts"], teacher["produced"]) == (
        "local",
        "base",
        3,
        3,
    )
    assert (teacher["requests"], teacher["cache_hits"], teacher["failed"], teacher["skipped"]) == (3, 0, 0, 0)
    assert teacher["stopped"] is None and teacher["prompt_tokens"] > 3 * 100
    assert 0 < teacher["completion_tokens"] <= 3 * 128
    replies = [json.loads(p.read_text()) for p in (tmp_path / "ws" / "teacher_cache").rglob("*.json")]
    assert len(replies) == 3 and all(r["text"].strip() for r in replies)  # the model wrote something
    assert sum(r["completion_tokens"] for r in replies) == teacher["completion_tokens"]

    again = synthesize.SPEC.build(cfg, inputs, force=True)  # the nightly re-run: no generation at all
    teacher = read_report(again)["teacher"]
    assert (teacher["cache_hits"], teacher["requests"], teacher["completion_tokens"]) == (3, 0, 0)
    assert (Path(again.path) / "pairs.jsonl").read_text() == (Path(out.path) / "pairs.jsonl").read_text()
