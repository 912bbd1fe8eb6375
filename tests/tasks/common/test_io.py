"""The fsspec seam (tasks/common/io.py): where a workspace lives, and the same helpers on a local folder and
on a remote filesystem (memory:// stands in for s3:// and gs://)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from tasks.common import io


@pytest.fixture
def memory_url():
    url = f"memory://io-{uuid.uuid4().hex[:8]}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(params=["local", "memory"])
def base(request, tmp_path, memory_url):
    return tmp_path / "ws" if request.param == "local" else memory_url


def cfg(workspace):
    return SimpleNamespace(workspace=workspace)


def test_local_workspace_is_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert io.workspace_location(cfg("ws")) == tmp_path / "ws" == io.workspace_path(cfg("ws"))
    assert io.workspace_location(cfg(f"file://{tmp_path}/other")) == tmp_path / "other"


def test_remote_workspace_stays_a_url_with_a_local_cache_per_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    assert io.workspace_location(cfg("memory://ws/")) == "memory://ws"
    local = io.workspace_path(cfg("memory://ws"))
    assert local.parent == tmp_path / "cache" and local.name.startswith("memory-")
    assert io.workspace_path(cfg("memory://other")) != local
    assert not (tmp_path / "memory:").exists()  # no longer a local folder named after the URL


def test_unknown_or_uninstalled_filesystems_are_config_errors():
    with pytest.raises(ValueError, match="fsspec knows no filesystem nosuch://"):
        io.workspace_location(cfg("nosuch://bucket/ws"))
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(ValueError, match="s3fs"):
            io.workspace_location(cfg("s3://bucket/ws"))


def test_helpers_behave_alike_on_local_and_remote(base):
    target = io.join(base, "runs", "r1", "summary.json")
    assert isinstance(target, Path) == isinstance(base, Path)
    assert not io.is_file(target) and io.listdir(io.join(base, "runs")) == []
    if isinstance(target, Path):
        target.parent.mkdir(parents=True)
    io.write_json(target, {"b": 1, "a": [1, 2]})
    assert io.read_json(target) == {"b": 1, "a": [1, 2]}
    assert io.read_text(target) == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'  # as on disk before
    assert io.write_text(io.join(base, "runs", "r2", "summary.json"), "{}")
    assert io.glob(base, "runs/*/summary.json") == [target, io.join(base, "runs", "r2", "summary.json")]
    assert io.listdir(io.join(base, "runs")) == ["r1", "r2"]
    # create-if-absent: the second writer is told, and the first one's text stays
    once = io.join(base, "p.json")
    assert io.write_text(once, "first", exclusive=True)
    assert not io.write_text(once, "second", exclusive=True) and io.read_text(once) == "first"
    io.remove(io.join(base, "runs"))
    assert io.listdir(io.join(base, "runs")) == [] and io.is_file(once)


def test_upload_puts_the_manifest_last_and_download_fetches_all_or_top_level(
    tmp_path, memory_url, monkeypatch
):
    folder = tmp_path / "v"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"\x00\x01")
    (folder / "report.json").write_text("{}")
    (folder / "manifest.json").write_text('{"ok": 1}')
    order: list[str] = []
    put_file = MemoryFileSystem.put_file

    def recording(self, lpath, rpath, *args, **kwargs):
        order.append(Path(rpath).name)
        return put_file(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", recording)
    io.upload(folder, f"{memory_url}/v")
    assert order[-1] == "manifest.json" and sorted(order) == ["manifest.json", "report.json", "weights.bin"]

    io.download(f"{memory_url}/v", tmp_path / "all")
    assert (tmp_path / "all" / "model" / "weights.bin").read_bytes() == b"\x00\x01"
    io.download(f"{memory_url}/v", tmp_path / "top", top_level_only=True)
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == ["manifest.json", "report.json"]


def test_check_workspace_probes_a_remote_one_and_leaves_nothing(memory_url):
    io.check_workspace(memory_url)
    assert io.listdir(memory_url) == []
