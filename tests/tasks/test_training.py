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
def tokenized(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
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
    tiny_model_dir: Path,
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
    tiny_model_dir: Path,
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
def test_train_qlora_on_cpu(tokenized: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import bitsandbytes as bnb  # a dependency: missing, this test fails (QLoRA on the CPU is a feature)

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
def test_train_qlora_on_cuda_bf16(tokenized: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
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
def test_train_lora_on_packed_rows(tmp_path_factory, tiny_model_dir: Path, tmp_path: Path) -> None:
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


@pytest.mark.slow
def test_train_reports_tokens_flops_and_peak_memory(
    tokenized: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from datasets import load_from_disk

    report = train_model(
        tokenized / "dataset",
        tmp_path,
        str(tiny_model_dir),
        tokenized / TEMPLATE_FILE,
        train_cfg("lora", max_steps=-1, num_epochs=1.0),
        seed=0,
    )
    train = load_from_disk(str(tokenized / "dataset"))["train"]
    assert report["tokens_seen"] == sum(sum(mask) for mask in train["attention_mask"])  # one epoch, no pads
    # transformers' estimate: 6 x (non-embedding) parameters x tokens
    per_token = report["total_flos"] / report["tokens_seen"]
    assert 6 * base_parameters(tiny_model_dir) * 0.5 < per_token < 6 * report["total_parameters"]
    assert report["peak_memory_mb"] > 100  # this process's peak resident set: torch alone is more
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert any("num_input_tokens_seen" in row for row in history)  # logged beside the loss: an MLflow curve


def test_out_of_memory_names_the_settings_to_change(
    tokenized: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trl import SFTTrainer

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SFTTrainer, "train", oom)
    with pytest.raises(torch.OutOfMemoryError) as caught:
        train_model(
            tokenized / "dataset",
            tmp_path,
            str(tiny_model_dir),
            tokenized / TEMPLATE_FILE,
            train_cfg("lora"),
            0,
        )
    message = str(caught.value)
    for key in (
        "train.batch_size (now 4)",
        "train.grad_accum",
        "train.gradient_checkpointing",
        "tokenize.max_length",
    ):
        assert key in message
    assert "train.method: qlora" in message and "Tried to allocate 2.00 GiB" in message


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(
    tokenized: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    """The pythia-70m Q&A tutorial: evaluation every few steps, the best checkpoint kept, training stopped
    when the held-out loss stops improving. A learning rate far too high makes the held-out loss climb after
    a first drop."""
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = train_cfg(
        "lora",
        learning_rate=0.3,
        max_steps=60,
        eval_steps=2,
        save_steps=2,
        load_best_model_at_end=True,
        early_stopping_patience=2,
    )
    report = train_model(
        tokenized / "dataset",
        tmp_path / "out",
        str(tiny_model_dir),
        tokenized / TEMPLATE_FILE,
        cfg,
        0,
        False,
        tmp_path / "resume",
    )
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    best = min(evals, key=evals.get)
    assert report["stopped_early"] and report["steps"] < 60
    assert report["steps"] == max(evals) == best + 2 * 2  # two evaluations without improvement
    assert (report["best_step"], report["best_eval_loss"]) == (best, evals[best])

    # the saved adapter is the best checkpoint's: its held-out loss is the best evaluation's, not the last's
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "out" / "model"
    )
    test = load_from_disk(str(tokenized / "dataset"))["test"]
    losses = []
    with torch.no_grad():
        for row in test:
            out = model.eval()(
                input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])
            )
            losses.append((out.loss.item(), sum(t != -100 for t in row["labels"][1:])))
    held_out = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert held_out == pytest.approx(evals[best], rel=1e-3)
    assert abs(held_out - evals[max(evals)]) > 1e-3


# --------------------------------------------------------------------------------------------------------
# The loss-only trainer (recipe.loss_only_sft_trainer): same loss and gradients as before, less work
# --------------------------------------------------------------------------------------------------------


def packed_trainer(model_dir: Path, tmp_path: Path, grad_accum: int = 1):
    """Our trainer on four packed rows of unequal length (so padding and per-row label counts differ),
    with LoRA's B matrices moved off zero so that every adapter weight gets a gradient."""
    from datasets import Dataset

    from tasks.common.models import load_tokenizer
    from tasks.training.recipe import build_trainer, load_model

    gen = torch.Generator().manual_seed(0)
    rows = []
    for lengths in ([5, 9, 6], [12, 3], [4, 4, 4, 4, 2], [7]):
        ids = torch.randint(5, 300, (sum(lengths),), generator=gen).tolist()
        labels = list(ids)
        for start in [sum(lengths[:i]) for i in range(len(lengths))]:
            labels[start] = -100  # as packing writes them: nothing predicted across a boundary
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
    train = Dataset.from_list(rows)
    cfg = train_cfg("lora", grad_accum=grad_accum)
    model = load_model(str(model_dir), cfg, "cpu", trust_remote_code=False)
    trainer = build_trainer(
        model, load_tokenizer(model_dir), train, train.select([]), cfg, tmp_path, "cpu", 0
    )
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5, generator=gen)
    return trainer, trainer.data_collator(rows)


def test_loss_only_trainer_equals_cross_entropy_and_trl_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    from trl import SFTTrainer

    trainer, batch = packed_trainer(tiny_model_dir, tmp_path)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # the packed path: no attention mask
    model = trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        # use_cache=False: with a KV cache transformers ignores the packed position ids' boundaries
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
        shifted = logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1)
        manual = torch.nn.functional.cross_entropy(*shifted, ignore_index=-100)
        trl_loss = SFTTrainer.compute_loss(trainer, model, dict(batch))  # TRL's fused head, as before
    assert loss.item() == pytest.approx(manual.item(), abs=1e-5)
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)


def test_loss_only_trainer_accumulates_to_full_batch_gradient(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two micro-batches with different label counts (train.grad_accum 2), through Trainer.training_step
    with the num_items_in_batch the Trainer computes, give the one-batch gradient (a mean of per-batch
    means would not)."""
    trainer, batch = packed_trainer(tiny_model_dir, tmp_path, grad_accum=2)
    model = trainer.model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    trainer.compute_loss(model, dict(batch)).backward()
    full = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad()

    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    counts = [int((h["labels"][:, 1:] != -100).sum()) for h in halves]
    assert counts[0] != counts[1]
    num_items = trainer._get_num_items_in_batch(halves, torch.device("cpu"))
    assert int(num_items) == sum(counts)
    trainer.current_gradient_accumulation_steps = 2
    for half in halves:
        trainer.training_step(model, dict(half), num_items)
    for name, p in params.items():
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, full[name], atol=1e-6, rtol=1e-4, msg=name)
