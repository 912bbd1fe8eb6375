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
