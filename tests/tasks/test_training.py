"""Tests for tasks.training: the config builders (fast) and real LoRA / full / QLoRA runs on a tiny scratch
model on CPU (slow: a few seconds each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from builders import tokenized_dataset

from pipeline_config.schema import LoraSection, QuantizationSection, SplitConfig, TokenizeConfig, TrainConfig
from tasks.common.models import pick_device
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.recipe import lora_config, quantization_config, train_model

# --------------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------------


def test_quantization_config_4bit_carries_values() -> None:
    cfg = TrainConfig(
        method="qlora",
        quantization=QuantizationSection(
            bits=4, quant_type="nf4", double_quant=True, compute_dtype="bfloat16"
        ),
    )
    q = quantization_config(cfg)
    assert q.load_in_4bit is True and q.load_in_8bit is False
    assert q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant is True
    assert q.bnb_4bit_compute_dtype is torch.bfloat16


def test_quantization_config_other_values() -> None:
    cfg = TrainConfig(
        method="qlora",
        quantization=QuantizationSection(quant_type="fp4", double_quant=False, compute_dtype="float32"),
    )
    q = quantization_config(cfg)
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        "fp4",
        False,
        torch.float32,
    )
    q8 = quantization_config(TrainConfig(method="qlora", quantization=QuantizationSection(bits=8)))
    assert q8.load_in_8bit is True and q8.load_in_4bit is False


@pytest.mark.parametrize("method", ["lora", "full"])
def test_quantization_config_only_for_qlora(method: str) -> None:
    assert quantization_config(TrainConfig(method=method)) is None


def test_lora_config_carries_values() -> None:
    cfg = TrainConfig(
        method="lora", lora=LoraSection(r=12, alpha=24, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    lc = lora_config(cfg)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (12, 24, 0.1)
    assert set(lc.target_modules) == {"q_proj", "v_proj"}
    assert lc.bias == "none"
    assert lc.task_type == "CAUSAL_LM"
    assert lora_config(TrainConfig(method="lora")).target_modules == "all-linear"


def test_lora_config_for_qlora_and_none_for_full() -> None:
    cfg = TrainConfig(method="qlora", lora=LoraSection(r=4, alpha=8), quantization=QuantizationSection())
    assert (lora_config(cfg).r, lora_config(cfg).lora_alpha) == (4, 8)
    assert lora_config(TrainConfig(method="full")) is None


def test_training_args_carry_values(tmp_path: Path) -> None:
    from tasks.training.recipe import training_args

    cfg = train_cfg(
        "lora",
        learning_rate=3e-4,
        max_steps=50,
        batch_size=2,
        grad_accum=4,
        warmup_ratio=0.1,
        lr_scheduler="linear",
        weight_decay=0.01,
        logging_steps=7,
    )
    args = training_args(cfg, tmp_path, "cpu", seed=11, has_eval=False)
    assert (args.learning_rate, args.max_steps, args.per_device_train_batch_size) == (3e-4, 50, 2)
    assert (args.gradient_accumulation_steps, args.weight_decay, args.logging_steps) == (4, 0.01, 7)
    assert args.lr_scheduler_type == "linear"
    assert args.get_warmup_steps(50) == 5  # warmup_ratio 0.1 of 50 steps
    assert (args.seed, args.data_seed) == (11, 11)
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert args.use_cpu is True and args.bf16 is False and args.fp16 is False
    assert args.save_strategy == "no" and args.eval_strategy == "no"
    with_eval = training_args(train_cfg("lora", eval_steps=5), tmp_path, "cpu", seed=0, has_eval=True)
    assert with_eval.eval_strategy == "steps" and with_eval.eval_steps == 5
    assert (
        training_args(train_cfg("lora", eval_steps=5), tmp_path, "cpu", 0, has_eval=False).eval_strategy
        == "no"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_pick_device_cuda_without_cuda_raises() -> None:
    with pytest.raises(RuntimeError, match="train.device is 'cuda' but no CUDA device is visible"):
        pick_device(TrainConfig(device="cuda").device)


def test_pick_device_auto_and_cpu() -> None:
    assert pick_device(TrainConfig(device="cpu").device) == "cpu"
    assert pick_device(TrainConfig(device="auto").device) == ("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------------------
# Real training runs on CPU
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:  # noqa: F811
    """40 repetitive pairs (four functions): the rows of the held-out sources minus 4 test rows train."""
    split = SplitConfig(test_fraction=0.25, max_test_rows=4)
    out, report = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 40, TokenizeConfig(max_length=256), 0, split
    )
    assert (report["test_rows"], report["truncated"]) == (4, 0)
    assert report["train_rows"] == 40 - report["split"]["held_out_rows"] > 20
    return out


def train_cfg(method: str, **overrides) -> TrainConfig:
    values = dict(
        method=method,
        lora=LoraSection(r=4, alpha=8, dropout=0.0),
        device="cpu",
        learning_rate=1e-2,
        max_steps=30,
        batch_size=4,
        logging_steps=5,
        warmup_ratio=0.0,
    )
    return TrainConfig(**{**values, **overrides})


def lora_b_norm(adapter_dir: Path) -> float:
    """LoRA's B matrices start at zero: a non-zero norm shows the optimizer really stepped."""
    from safetensors.torch import load_file

    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b, f"no lora_B tensors in {sorted(tensors)}"
    return float(sum(t.float().norm() for t in b))


def base_parameters(model_dir: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())


def logged_losses(out_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out_dir / "log_history.json").read_text()) if "loss" in h]


@pytest.mark.slow
def test_train_lora_loss_decreases_and_saves_adapter(
    tokenized: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from datasets import load_from_disk

    report = train_model(
        tokenized / "dataset",
        tmp_path,
        str(tiny_model_dir),
        tokenized / TEMPLATE_FILE,
        train_cfg("lora"),
        seed=0,
    )
    assert report["method"] == "lora" and report["adapter"] is True and report["device"] == "cpu"
    assert report["steps"] == 30
    assert report["rows_in"] == len(load_from_disk(str(tokenized / "dataset"))["train"])
    losses = logged_losses(tmp_path)
    assert len(losses) == 6  # every 5 of 30 steps
    assert report["first_logged_loss"] == losses[0] and report["last_logged_loss"] == losses[-1]
    # a random-init model starts near uniform, ln(vocab) = ln(400) ~ 5.99
    assert 5.5 < report["first_logged_loss"] < 6.5
    assert report["last_logged_loss"] < report["first_logged_loss"] - 0.05
    assert "eval_loss" not in report  # held-out perplexity is the evaluate stage's (no second pass here)
    assert 0 < report["trainable_parameters"] < report["total_parameters"]
    assert report["total_parameters"] == base_parameters(tiny_model_dir) + report["trainable_parameters"]

    model_dir = tmp_path / "model"
    adapter_cfg = json.loads((model_dir / "adapter_config.json").read_text())
    assert (adapter_cfg["r"], adapter_cfg["lora_alpha"], adapter_cfg["peft_type"]) == (4, 8, "LORA")
    assert Path(adapter_cfg["base_model_name_or_path"]) == tiny_model_dir
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert not (model_dir / "model.safetensors").exists()  # an adapter, not full weights
    assert (model_dir / "tokenizer.json").is_file()
    assert (model_dir / TEMPLATE_FILE).read_bytes() == (tokenized / TEMPLATE_FILE).read_bytes()
    assert lora_b_norm(model_dir) > 0


@pytest.mark.slow
def test_train_full_saves_weights_and_trains_everything(
    tokenized: Path,
    tiny_model_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    report = train_model(
        tokenized / "dataset",
        tmp_path,
        str(tiny_model_dir),
        tokenized / TEMPLATE_FILE,
        train_cfg("full", lora=None),
        seed=0,
    )
    assert report["method"] == "full" and report["adapter"] is False
    assert report["trainable_parameters"] == report["total_parameters"] > 0
    assert report["last_logged_loss"] < report["first_logged_loss"] - 1.0  # full FT learns fast here
    model_dir = tmp_path / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert not (model_dir / "adapter_config.json").exists()
    trained = load_file(model_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert set(trained) == set(base)
    assert sum(t.numel() for t in trained.values()) == report["total_parameters"]  # tied lm_head once
    assert any(not torch.equal(trained[k], base[k]) for k in base)


@pytest.mark.slow
def test_train_qlora_on_cpu(tokenized: Path, tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"bitsandbytes cannot be imported here: {exc!r}")
    from tasks.training.recipe import load_model

    cfg = train_cfg(
        "qlora", quantization=QuantizationSection(compute_dtype="float32"), max_steps=6, logging_steps=2
    )
    # the weights really are 4-bit NF4 on CPU (bitsandbytes >= 0.48 has CPU kernels)
    model = load_model(str(tiny_model_dir), cfg, "cpu", trust_remote_code=False)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4"
    del model

    report = train_model(
        tokenized / "dataset", tmp_path, str(tiny_model_dir), tokenized / TEMPLATE_FILE, cfg, seed=0
    )
    assert report["method"] == "qlora" and report["adapter"] is True and report["steps"] == 6
    losses = logged_losses(tmp_path)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert report["last_logged_loss"] < report["first_logged_loss"]
    # 4-bit weights pack two values per byte; the report counts the model's real size, as for LoRA
    assert report["total_parameters"] == base_parameters(tiny_model_dir) + report["trainable_parameters"]
    assert 0 < report["trainable_parameters"] < report["total_parameters"]
    adapter_cfg = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["r"] == 4
    assert lora_b_norm(tmp_path / "model") > 0


@pytest.mark.gpu
@pytest.mark.slow
def test_train_qlora_on_cuda_bf16(tokenized: Path, tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The seed profiles' GPU path: 4-bit NF4 base, bf16 compute and mixed precision, paged 8-bit AdamW."""
    cfg = train_cfg(
        "qlora",
        quantization=QuantizationSection(compute_dtype="bfloat16"),
        device="cuda",
        precision="bf16",
        optim="paged_adamw_8bit",
        max_steps=6,
        logging_steps=2,
    )
    report = train_model(
        tokenized / "dataset", tmp_path, str(tiny_model_dir), tokenized / TEMPLATE_FILE, cfg, seed=0
    )
    assert report["device"] == "cuda" and report["steps"] == 6
    assert report["last_logged_loss"] < report["first_logged_loss"]
    assert lora_b_norm(tmp_path / "model") > 0


@pytest.mark.slow
def test_train_lora_on_packed_rows(tmp_path_factory, tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Packed blocks go through SFTTrainer with our collator (tests/tasks/test_packing.py proves the loss
    equals the unpacked one); here the whole recipe runs on them and learns."""
    from datasets import load_from_disk

    out, report = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 40, TokenizeConfig(max_length=256, packing=True), 0
    )
    assert report["train_rows"] < report["train_examples"]
    result = train_model(
        out / "dataset",
        tmp_path,
        str(tiny_model_dir),
        out / TEMPLATE_FILE,
        train_cfg("lora", max_steps=20),
        0,
    )
    assert result["steps"] == 20 and result["rows_in"] == len(load_from_disk(str(out / "dataset"))["train"])
    assert result["last_logged_loss"] < result["first_logged_loss"] - 0.05
    assert lora_b_norm(tmp_path / "model") > 0
