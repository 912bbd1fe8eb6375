"""The CLI refuses bad input with exit 2 and one line, before Prefect or MLflow start (nothing written);
a SIGTERM ends a run promptly with its failure recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("workspace", "message"),
    [
        ("/proc/finetune-ws", "cannot be written"),
        ("FILE", "exists and is not a folder"),
        ("FILE/below", "is not a folder"),
        ("nosuch://bucket/ws", "fsspec knows no filesystem nosuch://"),  # was a local folder "nosuch:"
    ],
)
def test_unusable_workspace_is_a_config_error(tmp_path, tiny_profile, capsys, workspace, message):
    (tmp_path / "FILE").write_text("not a folder")
    ws = workspace.replace("FILE", str(tmp_path / "FILE"))
    path = tiny_profile(lambda raw: raw.update(workspace=ws))
    for argv in (["validate", str(path)], ["run", "--config", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"finetune: error: {path}: workspace '{ws}'") and message in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_hub_model_fails_before_any_stage(tmp_path, tiny_profile, capsys):
    path = tiny_profile(lambda raw: raw.update(model={"source": {"kind": "hub", "id": "nobody/nothing"}}))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.source.id 'nobody/nothing' (revision main) is not in the local Hugging Face cache" in err
    assert "hf download nobody/nothing" in err and err.count("\n") == 1
    assert not (tmp_path / "ws").exists()  # scrape never ran


def test_a_machine_without_a_sandbox_fails_before_any_stage(tmp_path, tiny_profile, capsys, monkeypatch):
    from tasks.common import sandbox

    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} in this test")
    path = tiny_profile()
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "synthesize and evaluate will run generated code, but cannot isolate untrusted code" in err
    assert "root: no root in this test; userns: no userns in this test" in err
    assert "`sandbox.backend: none`" in err and err.count("\n") == 1
    assert not (tmp_path / "ws").exists()  # scrape never ran
    # the explicit opt-in passes the check (and is logged loudly when the samples run)
    opted = tiny_profile(lambda raw: raw.update(sandbox={"backend": "none"}))
    from flows.finetune import DAG
    from flows.runner import plan
    from pipeline_config import load_config

    assert plan(load_config(opted), DAG).run[-1] == "register"


def test_missing_gguf_package_names_it(tiny_profile, capsys):
    source = {"kind": "gguf", "package": "no_such_models_pkg", "file": "m.gguf"}
    path = tiny_profile(lambda raw: raw.update(model={"source": source}))
    assert main(["run", "--config", str(path)]) == 2
    assert "model.source.package 'no_such_models_pkg' is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(("preset", "enabled"), [(None, "False"), ("true", "True")])
def test_cli_turns_prefect_telemetry_off_before_prefect_reads_its_settings(preset, enabled):
    """Prefect reads its settings once, at import: unless the user chose, `finetune` turns the server's
    telemetry off before that, or a run beside another prints ~150 lines of 'database is locked'."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    if preset:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = preset
    code = "import flows.cli, prefect.settings as s; print(s.get_current_settings().server.analytics_enabled)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == enabled


@pytest.mark.slow
def test_sigterm_records_failure_and_exits_promptly(tmp_path, tiny_profile):
    """No PREFECT_API_URL: the run starts its own temporary server, which the signal also stops."""
    path = tiny_profile()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    stages = tmp_path / "ws" / "stages"
    while not (stages / "synthesize").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out, _ = proc.communicate(timeout=240)
    assert time.time() - sent < 60, (
        out
    )  # not minutes waiting on a stopped server (a loaded CI box needs ~30 s)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "terminated (SIGTERM)" in out
    (summary,) = (tmp_path / "ws" / "runs").glob("*/summary.json")
    record = json.loads(summary.read_text())
    assert record["status"] == "failed" and record["error"].startswith(("Terminated", "TerminationSignal"))
    import mlflow

    assert mlflow.MlflowClient().get_run(record["mlflow"]["run_id"]).info.status == "FAILED"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--infill", "no marker"], "--infill needs exactly one <FILL> marker (found 0)"),
        (["--infill", "a<FILL>b<FILL>"], "(found 2)"),
        (["an instruction", "--infill", "a<FILL>b"], "instructions, --infill"),
        (["an instruction", "--messages", "chat.json"], "instructions, --infill"),
        ([], "instructions, --infill"),
    ],
)
def test_generate_infill_checks_its_marker_before_loading_a_model(
    tiny_profile, capsys, monkeypatch, argv, message
):
    from tasks.registration import serving

    monkeypatch.setattr(serving, "load_registered", lambda uri: pytest.fail("loaded a model"))
    assert main(["generate", "--config", str(tiny_profile()), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _registered(monkeypatch, vocab: dict):
    """A registered model whose tokenizer holds `vocab`, with the tracking store bypassed."""
    import contextlib
    from types import SimpleNamespace

    from flows import tracking
    from tasks.registration import registry, serving

    tokenizer = SimpleNamespace(get_vocab=lambda: vocab)
    model = SimpleNamespace(model=None, tokenizer=tokenizer, generation={"max_new_tokens": 7})
    monkeypatch.setattr(serving, "load_registered", lambda uri: model)
    monkeypatch.setattr(tracking, "client", lambda: None)
    monkeypatch.setattr(registry, "reachable_registry", lambda uri: contextlib.nullcontext())


def test_generate_infill_refuses_a_model_trained_without_fim(tiny_profile, capsys, monkeypatch):
    _registered(monkeypatch, {"<fim_prefix>": 1, "x": 2})  # no <fim_middle>, <fim_suffix>
    assert main(["generate", "--config", str(tiny_profile()), "--infill", "x = <FILL>\n"]) == 2
    err = capsys.readouterr().err
    assert "was not trained with FIM" in err and "tokenize.fim_rate" in err and err.count("\n") == 1


def test_generate_infill_prints_the_middle_of_a_psm_prompt(tiny_profile, capsys, monkeypatch):
    from tasks.common.generation import Completion
    from tasks.evaluation import completion

    _registered(monkeypatch, {"<fim_prefix>": 1, "<fim_middle>": 2, "<fim_suffix>": 3})
    seen = []
    monkeypatch.setattr(
        completion,
        "complete",
        lambda m, t, cases, b, n: seen.append((cases, n)) or [Completion("1 + 2", 3, False)],
    )
    assert main(["generate", "--config", str(tiny_profile()), "--infill", "x = <FILL>\nprint(x)\n"]) == 0
    assert capsys.readouterr().out == "1 + 2\n"
    ((case,), budget) = seen[0]
    assert completion.prompt(case) == "<fim_prefix>x = <fim_suffix>\nprint(x)\n<fim_middle>" and budget == 7


USER_TURN = {"role": "user", "content": "Sum a list."}
ANSWER = {"role": "assistant", "content": "sum(xs)"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        ("[{", "not JSON"),
        (json.dumps({"role": "user"}), "a JSON list of turns"),
        (json.dumps([USER_TURN, ANSWER]), "the last turn is the question to answer: a user turn"),
        (json.dumps([USER_TURN, USER_TURN]), "turn 2 is a user turn where an assistant turn belongs"),
    ],
)
def test_generate_messages_checks_the_conversation_before_loading_a_model(
    tiny_profile, capsys, monkeypatch, tmp_path, content, message
):
    from tasks.registration import serving

    monkeypatch.setattr(serving, "load_registered", lambda uri: pytest.fail("loaded a model"))
    path = tmp_path / "chat.json"
    if content is not None:
        path.write_text(content)
    assert main(["generate", "--config", str(tiny_profile()), "--messages", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--messages {path}: " in err and message in err and err.count("\n") == 1


def test_generate_messages_prompts_the_way_training_rendered_the_conversation(
    tiny_profile, capsys, monkeypatch, tmp_path
):
    import contextlib
    from types import SimpleNamespace

    from flows import tracking
    from tasks.common.chat import generation_form
    from tasks.common.generation import Completion
    from tasks.common.templates import ALPACA
    from tasks.registration import registry, serving

    tokenizer = SimpleNamespace(bos_token_id=None, bos_token=None)
    model = serving.RegisteredModel("models:/m/1", None, tokenizer, ALPACA, {"max_new_tokens": 7})
    prompts = []
    monkeypatch.setattr(
        serving.RegisteredModel,
        "complete",
        lambda self, p, n=None: prompts.extend(p) or [Completion("sum(xs) / len(xs)", 5, False)],
    )
    monkeypatch.setattr(serving, "load_registered", lambda uri: model)
    monkeypatch.setattr(tracking, "client", lambda: None)
    monkeypatch.setattr(registry, "reachable_registry", lambda uri: contextlib.nullcontext())
    turns = [USER_TURN, ANSWER, {"role": "user", "content": "And the mean?"}]
    (tmp_path / "chat.json").write_text(json.dumps(turns))
    argv = ["generate", "--config", str(tiny_profile()), "--messages", str(tmp_path / "chat.json")]
    assert main(argv) == 0
    assert capsys.readouterr().out == "sum(xs) / len(xs)\n"
    (prompt,) = prompts
    expected = generation_form([*turns, {"role": "assistant", "content": "x"}], ALPACA, tokenizer)[0]
    assert prompt == expected
    assert prompt.startswith(ALPACA.format("Sum a list.") + "sum(xs)\n") and prompt.endswith(
        ALPACA.format("And the mean?")
    )


def test_show_suggests_the_one_command_that_builds_the_stage(tiny_profile, capsys):
    """Nothing built yet: `--only train` alone would be refused for its missing inputs, so `show` names
    the command `run` accepts: the stage and every unbuilt stage it reads."""
    from flows.finetune import DAG
    from flows.runner import UsageError, plan
    from pipeline_config import load_config

    path = tiny_profile(lambda raw: raw.update(sandbox={"backend": "none"}))
    assert main(["show", "train", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    suggested = err.rsplit("\n  ", 1)[1].split()
    assert suggested[:4] == ["finetune", "run", "--config", str(path)] and suggested[4] == "--only"
    only = suggested[5:]
    assert only == ["scrape", "base_model", "synthesize", "clean", "tokenize", "train"]
    cfg = load_config(path)
    with pytest.raises(UsageError):
        plan(cfg, DAG, only=["train"], config_path=str(path))  # what `show` used to suggest
    assert plan(cfg, DAG, only=only, config_path=str(path)).run == tuple(only)  # accepted: it runs


def test_runs_lists_durations_and_mlflow_links(tiny_profile, tmp_path, capsys):
    from tasks.common.mlflow_store import STORE_DIR

    path = tiny_profile()
    runs = tmp_path / "ws" / "runs"
    stages = {"train": {"status": "executed"}, "evaluate": {"status": "cached"}}
    mlflow = {"run_id": "r1", "experiment_id": "3", "tracking_uri": f"sqlite:///{STORE_DIR / 'mlflow.db'}"}
    summaries = {
        "20261201T100000Z-aaaaaaaa": {"seconds": 42.4, "mlflow": mlflow},
        "20261202T100000Z-bbbbbbbb": {
            "seconds": 3725.0,
            "mlflow": {**mlflow, "run_id": "r2", "run_url": "http://mlflow:5000/#/experiments/3/runs/r2"},
        },
        "20261203T100000Z-cccccccc": {
            "seconds": 83.0,
            "mlflow": {**mlflow, "tracking_uri": "sqlite:////x/mlflow.db"},
        },
        "20261130T100000Z-dddddddd": {"mlflow": {}},  # written before runs recorded their duration
    }
    for run_id, extra in summaries.items():
        (runs / run_id).mkdir(parents=True)
        summary = {"run_id": run_id, "profile": "tiny", "status": "completed", "stages": stages, **extra}
        (runs / run_id / "summary.json").write_text(json.dumps(summary))
    assert main(["runs", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3:5] for line in lines if not line.startswith(" ")] == [
        ["1", "min"],  # 83 s
        ["1", "h"],  # 3725 s
        ["42", "s"],
        ["-", "train:run"],
    ]
    assert "1 min 23 s" in lines[0] and "1 h 02 min" in lines[2]
    served = "http://127.0.0.1:5000/#/experiments/3/runs/r1 (after `{}make tracking-server`)"
    assert lines[1] == "    mlflow: " + served.format("MLFLOW_STORE=/x ")
    assert lines[3] == "    mlflow: http://mlflow:5000/#/experiments/3/runs/r2"
    assert (
        lines[5] == "    mlflow: http://127.0.0.1:5000/#/experiments/3/runs/r1 (after `make tracking-server`)"
    )
    assert len(lines) == 7  # the old summary has no MLflow run to link
