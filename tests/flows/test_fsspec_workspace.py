"""The whole tiny pipeline on a non-local fsspec workspace (memory://, standing in for s3:// or gs:// on
workers that share no disk): every stage is published there, the local machine keeps only its cache, and a
second run on a machine with an empty cache is all cached from the pointers on the remote filesystem.

memory:// lives in this process, so the flow runs in-process (under the session's Prefect test server)."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
import yaml

from flows.finetune import STAGES, finetune
from flows.inspect import list_runs, show_stage
from pipeline_config import load_config
from tasks.common import io
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """(workspace URL, config path); the memory filesystem is emptied afterwards."""
    url = f"memory://finetune-e2e-{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((REPO / "pipeline_config" / "tiny.yaml").read_text())
    raw["workspace"] = url
    raw["register"]["model_name"] = "fsspec-model"
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    yield url, path
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(scope="module")
def cold(prefect_server, remote, tmp_path_factory):
    url, config = remote
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_CACHE", str(tmp_path_factory.mktemp("machine-a")))
        return finetune(config_path=str(config)), io.local_cache(url)


def test_every_stage_is_published_on_the_remote_filesystem(cold, remote):
    url, _ = remote
    summary, cache = cold
    assert {n: s["status"] for n, s in summary["stages"].items()} == dict.fromkeys(STAGES, "executed")
    for name, s in summary["stages"].items():
        assert s["path"].startswith(f"{url}/stages/{name}/.v-{s['key']}-"), name
        assert io.read_json(f"{s['path']}/manifest.json")["key"] == s["key"]
        assert io.read_json(f"{url}/stages/{name}/{s['key']}.json")["version"] == s["path"].rsplit("/", 1)[1]
    # models and datasets went up too, not only the small files
    assert io.is_file(f"{summary['stages']['train']['path']}/model/adapter_config.json")
    assert io.listdir(f"{summary['stages']['tokenize']['path']}/dataset")
    assert summary["summary_path"] == f"{url}/runs/{summary['run_id']}/summary.json"
    assert io.read_json(summary["summary_path"])["stages"] == summary["stages"]
    assert summary["mlflow"]["model_name"] == "fsspec-model" and summary["mlflow"]["version"] == "1"

    # this machine holds only its cache: copies of published versions, no stage built or left elsewhere
    assert list(cache.rglob("*.safetensors")) and list(cache.rglob("*.arrow"))  # what it built, kept
    manifests = sorted(cache.rglob("manifest.json"))
    assert {p.relative_to(cache).parts[0] for p in manifests} == {"stages"}
    assert {p.parent.name for p in manifests} == {
        s["path"].rsplit("/", 1)[1] for s in summary["stages"].values()
    }
    assert not [p for p in (cache / "build").rglob("*") if p.is_dir() and p.name.startswith(".v-")]
    assert not Path("memory:").exists()  # the URL was once taken for a relative local folder


def test_a_machine_with_an_empty_cache_finds_everything_cached(cold, remote, tmp_path):
    url, config = remote
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINETUNE_CACHE", str(tmp_path / "machine-b"))
        warm = finetune(config_path=str(config))
        cache = io.local_cache(url)
        cfg = load_config(str(config))
        shown = show_stage(cfg, str(config), "evaluate")
    assert {n: s["status"] for n, s in warm["stages"].items()} == dict.fromkeys(STAGES, "cached")
    assert {n: s["key"] for n, s in warm["stages"].items()} == {
        n: s["key"] for n, s in cold[0]["stages"].items()
    }
    assert warm["mlflow"]["version"] == "1"  # nothing registered again
    # only the reports were fetched to log and show them: no model or dataset came down
    assert not list(cache.rglob("*.safetensors")) and not list(cache.rglob("*.arrow"))
    assert f"data: {warm['stages']['evaluate']['path']}" in shown
    runs = list_runs(url)
    assert runs.splitlines()[0].startswith(warm["run_id"]) and cold[0]["run_id"] in runs
