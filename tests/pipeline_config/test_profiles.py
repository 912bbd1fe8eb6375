"""Every shipped profile validates, opens with its command, and reproduces its reference recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_config import HubSource, ScratchSource, load_config
from tests.pipeline_config.helpers import PROFILES, REPO, VALID, write


def test_there_are_profiles():
    names = {p.stem for p in PROFILES}
    assert {"offline", "tiny"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_validates(path: Path):
    cfg = load_config(path)
    assert cfg.name
    assert path.read_text().startswith("#"), "each profile opens with a comment giving its command"


def test_valid_fixture_is_valid(tmp_path):
    assert load_config(write(tmp_path, VALID)).train.lora.r == 8


def test_seed_recipes_are_reproduced():
    """The facts each reference recipe (shared seeds/README) fixes, read back from our profiles."""
    codegen = load_config(REPO / "pipeline_config/codegen350m_qlora.yaml")
    assert codegen.model.source == HubSource(kind="hub", id="Salesforce/codegen-350M-mono", revision="main")
    assert codegen.train.lora.target_modules == ["qkv_proj"]  # peft's codegen default: the seed names none
    assert (
        codegen.train.method,
        codegen.train.lora.r,
        codegen.train.lora.alpha,
        codegen.train.lora.dropout,
    ) == ("qlora", 64, 16, 0.1)
    q = codegen.train.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "float16")
    assert (codegen.tokenize.packing, codegen.tokenize.max_length, codegen.tokenize.template) == (
        True,
        2048,
        "codegen_task",
    )

    alpaca = load_config(REPO / "pipeline_config/code_alpaca_full.yaml")
    assert (
        alpaca.train.method == "full" and alpaca.train.learning_rate == 2e-5 and alpaca.train.num_epochs == 3
    )
    assert (alpaca.tokenize.max_length, alpaca.train.lr_scheduler, alpaca.train.warmup_ratio) == (
        512,
        "cosine",
        0.03,
    )
    assert alpaca.synthesize.self_instruct.enabled and alpaca.synthesize.teacher.backend == "openai"
    assert (alpaca.train.precision, alpaca.train.batch_size, alpaca.train.grad_accum) == ("fp16", 8, 4)
    assert (alpaca.train.logging_steps, alpaca.train.save_steps, alpaca.train.weight_decay) == (1, 500, 0.0)

    phi = load_config(REPO / "pipeline_config/phi3_mini_qlora.yaml")
    assert (phi.train.lora.r, phi.train.lora.alpha, phi.train.lora.dropout) == (16, 16, 0.05)
    # q/k/v/o/gate/up/down under Phi-3's fused names (the seed's q_proj etc. do not exist in Phi-3)
    assert sorted(phi.train.lora.target_modules) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert (phi.train.batch_size, phi.train.grad_accum, phi.train.logging_steps) == (4, 8, 100)
    assert (phi.train.lr_scheduler, phi.train.warmup_ratio, phi.tokenize.template) == ("linear", 0.1, "chat")
    assert (phi.train.optim, phi.train.learning_rate, phi.train.num_epochs, phi.train.eval_steps) == (
        "paged_adamw_8bit",
        1e-4,
        3,
        100,
    )
    assert phi.evaluate.max_samples == 500 and phi.train.quantization.compute_dtype == "bfloat16"

    star = load_config(REPO / "pipeline_config/starcoderbase1b_fim.yaml")
    assert (star.train.lora.r, star.train.lora.alpha) == (8, 32)
    # the seed's q_attn exists only in GPTBigCode's cross-attention, which StarCoder lacks
    assert star.train.lora.target_modules == ["c_proj", "c_attn", "c_fc"] and star.train.lora.dropout == 0.0
    assert star.tokenize.fim_rate > 0 and star.tokenize.packing and star.scrape.package == "sklearn"

    pythia = load_config(REPO / "pipeline_config/pythia70m_full.yaml")
    assert (pythia.train.method, pythia.train.optim, pythia.train.learning_rate) == (
        "full",
        "adafactor",
        1e-5,
    )
    assert (pythia.train.batch_size, pythia.train.grad_accum, pythia.train.eval_steps) == (1, 4, 120)
    assert (pythia.train.save_steps, pythia.train.load_best_model_at_end, pythia.train.logging_steps) == (
        120,
        True,
        1,
    )
    assert (pythia.train.lr_scheduler, pythia.tokenize.template, pythia.tokenize.max_length) == (
        "linear",
        "question_answer",
        2048,
    )
    architectures = [c.model.architecture for c in (codegen, alpaca, phi, star, pythia)]
    assert architectures == ["codegen", "llama", "phi3", "gpt_bigcode", "gpt_neox"]


def test_profiles_use_the_expected_source_kinds():
    assert isinstance(load_config(REPO / "pipeline_config/tiny.yaml").model.source, ScratchSource)
    for name in [
        "code_alpaca_full",
        "codegen350m_qlora",
        "phi3_mini_qlora",
        "pythia70m_full",
        "starcoderbase1b_fim",
    ]:
        assert load_config(REPO / f"pipeline_config/{name}.yaml").model.source.kind == "hub", name
