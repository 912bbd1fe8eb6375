"""The miniature: each seed profile's architecture built tiny from its config class (`model.miniature`;
tests/flows/test_seed_profiles.py runs every seed profile through the whole flow that way). Also: the
architecture table the profiles are checked against, a target module the architecture lacks, an
optimizer the machine lacks, and QLoRA's 4-bit layers on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from builders import PYTHON_CORPUS

from pipeline_config import ConfigError, load_config
from pipeline_config.schema import ARCHITECTURE_LINEAR_MODULES, ModelConfig, TrainConfig
from tasks.common.templates import TEMPLATES

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pipeline_config"

# profile -> (architecture class, template) each seed must run as
SEEDS = {
    "codegen350m_qlora.yaml": ("CodeGenForCausalLM", "codegen_task"),  # 000
    "code_alpaca_full.yaml": ("LlamaForCausalLM", "alpaca"),  # 001
    "phi3_mini_qlora.yaml": ("Phi3ForCausalLM", "chat"),  # 002
    "starcoderbase1b_fim.yaml": ("GPTBigCodeForCausalLM", "alpaca"),  # 003
    "pythia70m_full.yaml": ("GPTNeoXForCausalLM", "question_answer"),  # 004
}
# the code and the templates' words, so that prompts take few tokens (as a real tokenizer's would)
TOKENIZER_TEXT = [PYTHON_CORPUS, *(t.with_input + t.without_input for t in TEMPLATES.values())]


def miniature_dir(tmp_path: Path, architecture: str) -> Path:
    from tasks.base_model.miniature import build_miniature

    model = ModelConfig(source={"kind": "hub", "id": "org/x"}, architecture=architecture, miniature=True)
    build_miniature(TOKENIZER_TEXT * 4, tmp_path / architecture, model, seed=0)
    return tmp_path / architecture


# --------------------------------------------------------------------------------------------------------
# The switch, the architecture table, bad targets and optimizers (fast)
# --------------------------------------------------------------------------------------------------------


def test_miniature_switch_values():
    hub = {"kind": "hub", "id": "org/x"}
    assert ModelConfig(source=hub).miniature is None
    assert ModelConfig(source=hub, architecture="llama", miniature=False).miniature is None
    on = ModelConfig(source=hub, architecture="llama", miniature=True).miniature
    assert (on.hidden_size, on.num_layers, on.max_position_embeddings) == (64, 2, 2048)
    small = ModelConfig(source=hub, architecture="llama", miniature={"hidden_size": 32, "num_heads": 2})
    assert (small.miniature.hidden_size, small.miniature.num_heads) == (32, 2)
    with pytest.raises(ValueError, match="model.miniature needs model.architecture"):
        ModelConfig(source=hub, miniature=True)
    with pytest.raises(ValueError, match="a scratch source is already small"):
        ModelConfig(source={"kind": "scratch"}, architecture="llama", miniature=True)
    with pytest.raises(ValueError, match="multiple of 4 for codegen"):
        ModelConfig(source=hub, architecture="codegen", miniature={"num_heads": 2, "hidden_size": 64})


def test_base_model_key_holds_the_switch_and_never_reads_the_hub(tiny_model_dir, tmp_path):
    from tasks import base_model

    cfg = load_config(CONFIGS / "phi3_mini_qlora.yaml")
    folder = {"kind": "folder", "path": str(tiny_model_dir)}

    def key(**model) -> str:
        with_model = cfg.model_copy(update={"model": ModelConfig(source=folder, **model)})
        return base_model.SPEC.key(with_model, {"scrape": "s"})

    keys = {
        key(),
        key(architecture="phi3", miniature=True),
        key(architecture="phi3", miniature={"num_layers": 1}),
    }
    assert len(keys) == 3
    # the profile's hub model is not in the local cache here: a miniature neither needs nor reads it
    raw = yaml.safe_load((CONFIGS / "phi3_mini_qlora.yaml").read_text())
    raw["model"]["miniature"] = True
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(raw))
    mini = load_config(tmp_path / "mini.yaml")
    assert mini.model.source.kind == "hub" and base_model.uses(mini) == ("scrape",)
    assert base_model.SPEC.key(mini, {"scrape": "s"})


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURE_LINEAR_MODULES))
def test_architecture_table_matches_the_real_classes(tmp_path, architecture):
    """pipeline_config's table, which profiles are checked against at load, is what transformers builds."""
    from transformers import AutoModelForCausalLM

    from tasks.training.model import linear_module_names

    model = AutoModelForCausalLM.from_pretrained(miniature_dir(tmp_path, architecture))
    assert model.config.model_type == architecture
    assert linear_module_names(model) == sorted(ARCHITECTURE_LINEAR_MODULES[architecture])


def test_miniature_tokenizers_have_the_real_families_tokens(tmp_path):
    from transformers import AutoTokenizer

    def load(architecture: str):
        return AutoTokenizer.from_pretrained(miniature_dir(tmp_path, architecture))

    llama, phi3, bigcode, neox = (load(a) for a in ("llama", "phi3", "gpt_bigcode", "gpt_neox"))
    assert llama("x")["input_ids"][0] == llama.bos_token_id and llama.eos_token == "</s>"
    assert neox("x")["input_ids"][0] != neox.bos_token_id and neox.pad_token is None
    assert {"<fim_prefix>", "<fim_middle>", "<fim_suffix>"} <= set(bigcode.get_vocab())
    assert "<fim_prefix>" not in neox.get_vocab()
    chat = phi3.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_architecture_mismatch_is_named(tmp_path, tiny_model_dir):
    from tasks import base_model

    cfg = load_config(CONFIGS / "tiny.yaml")
    model = ModelConfig(source={"kind": "folder", "path": str(tiny_model_dir)}, architecture="phi3")
    cfg = cfg.model_copy(update={"model": model, "workspace": str(tmp_path / "ws")})
    with pytest.raises(
        ValueError, match="model.architecture is 'phi3' but the model of model.source is a 'llama'"
    ):
        base_model.SPEC.build(cfg, {})


def test_half_precision_compute_on_cpu_runs_with_a_note(tmp_path, caplog):
    """bitsandbytes 0.50 computes 4-bit layers in float16 / bfloat16 on the CPU: the recipe's value is kept,
    with a note that float32 is faster there."""
    from tasks.training.model import load_model

    cfg = TrainConfig(
        method="qlora",
        quantization={"compute_dtype": "float16"},
        lora={"target_modules": ["qkv_proj"]},
        device="cpu",
    )
    with caplog.at_level(logging.INFO, logger="finetune"):
        model = load_model(str(miniature_dir(tmp_path, "codegen")), cfg, "cpu", trust_remote_code=False)
    assert "train.quantization.compute_dtype float16 on the CPU" in caplog.text
    ids = torch.arange(12).view(1, 12)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)


def test_profile_target_module_the_architecture_lacks_fails_at_load(tmp_path):
    raw = yaml.safe_load((CONFIGS / "phi3_mini_qlora.yaml").read_text())
    raw["train"]["lora"]["target_modules"] = ["q_proj", "o_proj"]  # the seed's unfused names
    path = tmp_path / "phi3.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "train.lora.target_modules names ['q_proj']" in message and "phi3" in message
    assert "qkv_proj, o_proj, gate_up_proj, down_proj" in message


def test_target_module_absent_from_the_model_is_named(tmp_path):
    """The train stage's own check (any model, architecture declared or not): peft alone would train
    o_proj and skip q_proj without a word."""
    from tasks.training.model import load_model

    model_dir = miniature_dir(tmp_path, "phi3")
    cfg = TrainConfig(method="lora", lora={"target_modules": ["q_proj", "o_proj", "up_proj"]}, device="cpu")
    with pytest.raises(ValueError) as err:
        load_model(str(model_dir), cfg, "cpu", trust_remote_code=False)
    message = str(err.value)
    assert message.startswith("train.lora.target_modules: q_proj, up_proj not in this phi3 model")
    assert "its linear modules: down_proj, gate_up_proj, lm_head, o_proj, qkv_proj" in message
    ok = TrainConfig(method="lora", lora={"target_modules": ["qkv_proj", "o_proj"]}, device="cpu")
    assert load_model(str(model_dir), ok, "cpu", trust_remote_code=False).config.model_type == "phi3"


@pytest.mark.parametrize("optim", ["schedule_free_adamw", "adamw_torch_xla", "adamw_torch_4bit"])
def test_optimizer_the_machine_lacks_names_train_optim(tmp_path, optim):
    import importlib.util

    from tasks.training.recipe import training_args

    package = {
        "schedule_free_adamw": "schedulefree",
        "adamw_torch_xla": "torch_xla",
        "adamw_torch_4bit": "torchao",
    }
    if importlib.util.find_spec(package[optim]):
        pytest.skip(f"{package[optim]} is installed here")
    with pytest.raises(ValueError, match=f"train.optim '{optim}' cannot run on cpu here"):
        training_args(TrainConfig(optim=optim, device="cpu"), tmp_path, "cpu", seed=0, has_eval=False)


@pytest.mark.parametrize("optim", ["adamw_torch", "adafactor", "paged_adamw_8bit"])
def test_seed_optimizers_run_on_cpu(tmp_path, optim, caplog):
    """bitsandbytes 0.50 runs paged_adamw_8bit on the CPU with 8-bit states and no paging: a logged note."""
    from tasks.training.recipe import training_args

    with caplog.at_level(logging.INFO, logger="finetune"):
        args = training_args(TrainConfig(optim=optim, device="cpu"), tmp_path, "cpu", seed=0, has_eval=False)
    assert args.optim == optim
    paged_note = "train.optim 'paged_adamw_8bit' on the CPU: bitsandbytes runs it without paging"
    assert (paged_note in caplog.text) == (optim == "paged_adamw_8bit")


def test_paged_adamw_8bit_keeps_8bit_states_on_cpu():
    import bitsandbytes as bnb  # a missing bitsandbytes fails here: QLoRA on the CPU depends on it

    probe = torch.nn.Parameter(torch.randn(64, 64))
    optimizer = bnb.optim.PagedAdamW8bit([probe], lr=1e-2)
    before = probe.detach().clone()
    (probe**2).sum().backward()
    optimizer.step()
    state = optimizer.state[probe]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    assert not torch.equal(before, probe.detach())


def test_a_4bit_layer_still_passes_gradients_after_an_evaluation(tmp_path):
    """bitsandbytes repacks 4-bit weights for an inference-only CPU kernel on the first no-grad eval pass;
    training after an evaluation (train.eval_steps) must still send gradients through those layers."""
    model_dir = miniature_dir(tmp_path, "gpt_bigcode")  # c_proj has a bias: the packed path raised on it
    cfg = TrainConfig(method="qlora", device="cpu", quantization={"compute_dtype": "float32"})

    from tasks.training.model import load_model

    model = load_model(str(model_dir), cfg, "cpu", trust_remote_code=False)
    ids = torch.randint(0, 200, (1, 16))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    model(inputs_embeds=embeddings).logits.sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
