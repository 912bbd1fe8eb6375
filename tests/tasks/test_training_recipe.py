"""Tests for tasks/training/recipe.py: the trainer's arguments (fast), real LoRA / full / QLoRA runs of
`train_model` on a tiny scratch model on the CPU (slow: a few seconds each), and the loss-only trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from builders import tokenized_dataset
from training_builders import base_parameters, logged_losses, lora_b_norm, train_cfg, train_job

from pipeline_config.schema import QuantizationSection, TokenizeConfig
from tasks.common.models import cpu_has_bf16
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.model import load_model, resolved
from tasks.training.recipe import build_trainer, train_model, training_args


def test_training_args_carry_values(tmp_path: Path) -> None:
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


def test_bf16_on_the_cpu_is_autocast_over_fp32_weights(tmp_path: Path) -> None:
    cfg = resolved(train_cfg("lora", precision="auto"), "cpu")
    assert cfg.precision == ("bf16" if cpu_has_bf16() else "fp32")
    args = training_args(cfg, tmp_path, "cpu", seed=0, has_eval=False)
    assert (args.bf16, args.fp16, args.use_cpu) == (cpu_has_bf16(), False, True)


# --------------------------------------------------------------------------------------------------------
# Real training runs on CPU
# --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_lora_loss_decreases_and_saves_adapter(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from datasets import load_from_disk

    report = train_model(train_job(training_data, tiny_model_dir, tmp_path, train_cfg("lora")))
    assert report["method"] == "lora" and report["adapter"] is True and report["device"] == "cpu"
    assert report["steps"] == 30
    assert report["rows_in"] == len(load_from_disk(str(training_data / "dataset"))["train"])
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
    assert (model_dir / TEMPLATE_FILE).read_bytes() == (training_data / TEMPLATE_FILE).read_bytes()
    assert lora_b_norm(model_dir) > 0


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU computes bf16 only by emulation")
def test_bf16_lora_learns_like_fp32(training_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    reports = {}
    for precision in ("fp32", "bf16"):
        cfg = train_cfg("lora", precision=precision, max_steps=20)
        reports[precision] = train_model(train_job(training_data, tiny_model_dir, tmp_path / precision, cfg))
    fp32, bf16 = reports["fp32"], reports["bf16"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["last_logged_loss"] < bf16["first_logged_loss"] - 0.05
    # same seed, same batches: bf16 rounding moves the loss curve a little, not the learning
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.05)
    # the adapter is stored in fp32, as the master weights the optimizer updated
    with safe_open(str(tmp_path / "bf16" / "model" / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_and_save_the_same_adapter(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """train.compile: every decoder layer compiled in place (its LoRA layers inside), the loss curve of the
    eager run, and an adapter with the same tensor names (in-place compile adds no `_orig_mod.` prefix)."""
    from safetensors import safe_open

    reports, names = {}, {}
    for compiled in (False, True):
        cfg = train_cfg("lora", compile=compiled, max_steps=10)
        out = tmp_path / str(compiled)
        reports[compiled] = train_model(train_job(training_data, tiny_model_dir, out, cfg))
        with safe_open(str(out / "model" / "adapter_model.safetensors"), "pt") as f:
            names[compiled] = sorted(f.keys())
    layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    assert (reports[False]["compiled_blocks"], reports[True]["compiled_blocks"]) == (0, layers)
    assert reports[True]["train_loss"] == pytest.approx(reports[False]["train_loss"], rel=1e-3)
    assert names[True] == names[False]


def test_compile_is_refused_where_it_cannot_run(monkeypatch) -> None:
    import shutil

    from tasks.training.model import compile_blocks, resolved

    with pytest.raises(ValueError, match="train.compile does not run with train.method qlora"):
        train_cfg("qlora", compile=True)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert resolved(train_cfg("lora", compile="auto"), "cpu").compile is True
    qlora = train_cfg("qlora", compile="auto", quantization=QuantizationSection())
    assert resolved(qlora, "cpu").compile is False
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a slim container: no C++ compiler
    assert resolved(train_cfg("lora", compile="auto"), "cpu").compile is False  # eager, not an error
    assert resolved(train_cfg("lora", compile="auto"), "cuda").compile is True
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        compile_blocks(torch.nn.Linear(2, 2), "cpu")


@pytest.mark.slow
def test_train_full_saves_weights_and_trains_everything(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    report = train_model(train_job(training_data, tiny_model_dir, tmp_path, train_cfg("full", lora=None)))
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
def test_train_qlora_on_cpu(training_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """On a 4-bit NF4 base (tests/tasks/test_training_model.py checks the layers are)."""
    cfg = train_cfg(
        "qlora", quantization=QuantizationSection(compute_dtype="float32"), max_steps=6, logging_steps=2
    )
    report = train_model(train_job(training_data, tiny_model_dir, tmp_path, cfg))
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
def test_train_qlora_on_cuda_bf16(training_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
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
    report = train_model(train_job(training_data, tiny_model_dir, tmp_path, cfg))
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
    result = train_model(train_job(out, tiny_model_dir, tmp_path, train_cfg("lora", max_steps=20)))
    assert result["steps"] == 20 and result["rows_in"] == len(load_from_disk(str(out / "dataset"))["train"])
    assert result["last_logged_loss"] < result["first_logged_loss"] - 0.05
    assert lora_b_norm(tmp_path / "model") > 0


@pytest.mark.slow
def test_train_reports_tokens_flops_and_peak_memory(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from datasets import load_from_disk

    cfg = train_cfg("lora", max_steps=-1, num_epochs=1.0)
    report = train_model(train_job(training_data, tiny_model_dir, tmp_path, cfg))
    train = load_from_disk(str(training_data / "dataset"))["train"]
    assert report["tokens_seen"] == sum(sum(mask) for mask in train["attention_mask"])  # one epoch, no pads
    # transformers' estimate: 6 x (non-embedding) parameters x tokens
    per_token = report["total_flos"] / report["tokens_seen"]
    assert 6 * base_parameters(tiny_model_dir) * 0.5 < per_token < 6 * report["total_parameters"]
    assert report["peak_memory_mb"] > 100  # this process's peak resident set: torch alone is more
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert any("num_input_tokens_seen" in row for row in history)  # logged beside the loss: an MLflow curve


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
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
    job = train_job(training_data, tiny_model_dir, tmp_path / "out", cfg, resume=tmp_path / "resume")
    report = train_model(job)
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
    test = load_from_disk(str(training_data / "dataset"))["test"]
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


def test_the_lm_head_runs_only_at_labeled_positions_with_the_same_loss_and_gradient(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Prompts masked as loss masking masks them: the trainer's LM head sees only the positions whose next
    token is labeled, and the loss and every LoRA gradient equal the full-vocabulary path's (the model's
    own loss over all positions)."""
    from transformers import Trainer

    trainer, batch = packed_trainer(tiny_model_dir, tmp_path)
    batch["labels"][:, :4] = -100  # each row's first tokens: a prompt
    model = trainer.model.train()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    head_rows = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute(trainer, model, dict(batch), num_items_in_batch=torch.tensor(labeled))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in params.items()}

    labeled = int((batch["labels"][:, 1:] != -100).sum())
    ours, our_grads = loss_and_grads(type(trainer).compute_loss)
    full, full_grads = loss_and_grads(Trainer.compute_loss)
    hook.remove()
    assert head_rows == [labeled, batch["input_ids"].numel()]
    assert ours == pytest.approx(full, abs=1e-6)
    for name in params:
        torch.testing.assert_close(our_grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_remote_code_without_a_position_mask_keeps_the_full_lm_head() -> None:
    import types

    from transformers import LlamaForCausalLM

    from tasks.common.models import takes_position_mask

    remote = types.new_class("RemoteLM", (torch.nn.Module,))
    remote.forward = lambda self, input_ids=None, logits_to_keep=0: None  # no slice_logits_to_keep here
    assert not takes_position_mask(remote())
    assert takes_position_mask(LlamaForCausalLM.__new__(LlamaForCausalLM))
