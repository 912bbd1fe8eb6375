"""Every shipped profile validates; bad configs fail with exit code 2 and a message naming file, key, line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_config import (
    OPTIMIZER_NAMES,
    SCHEDULER_TYPES,
    ConfigError,
    FolderSource,
    GGUFSource,
    HubSource,
    ScratchSource,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent

PROFILES = sorted((REPO / "pipeline_config").glob("*.yaml"))
VALID = """\
name: t
model:
  source:
    kind: scratch
    vocab_size: 512
train:
  method: lora
  lora:
    r: 8
"""


def test_there_are_profiles():
    names = {p.stem for p in PROFILES}
    assert {"offline", "tiny"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_validates(path: Path):
    cfg = load_config(path)
    assert cfg.name
    assert path.read_text().startswith("#"), "each profile opens with a comment giving its command"


def main(argv: list[str]) -> int:
    # imported here so that the schema tests run even when flows/ does not import
    from flows.cli import main as cli_main

    return cli_main(argv)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            VALID.replace("    r: 8", "    r: 0"),
            "train.lora.r, line 9: Input should be greater than 0 (got 0)",
        ),
        (VALID.replace("    r: 8", "    rank: 8"), "train.lora.rank, line 9: unknown key"),
        (VALID.replace("    vocab_size: 512", "    vocab_size: lots"), "model.source.vocab_size, line 5"),
        (VALID + "tokenize:\n  max_length: 100000\n", "exceeds model.source.max_position_embeddings"),
        (
            VALID.replace("  method: lora", "  method: qlora"),
            "train.method 'qlora' needs a train.quantization",
        ),
        (VALID.replace("name: t\n", ""), "name: required key is missing"),
        (VALID + "bogus: 1\n", "bogus, line 10: unknown key"),
    ],
)
def test_invalid_config_names_key_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_valid_fixture_is_valid(tmp_path):
    assert load_config(write(tmp_path, VALID)).train.lora.r == 8


def test_cli_exit_code_2_and_nothing_written(tmp_path, capsys):
    workspace = tmp_path / "ws"
    path = write(tmp_path, f"workspace: {workspace}\n" + VALID.replace("    r: 8", "    r: -1"))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.lora.r" in err and str(path) in err and "Traceback" not in err
    assert not workspace.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_unknown_stage(tmp_path, capsys):
    assert main(["run", "--config", str(REPO / "pipeline_config/tiny.yaml"), "--force", "trian"]) == 2
    assert "--force: unknown stage(s) trian" in capsys.readouterr().err


def test_console_script_reports_bad_config_without_traceback(tmp_path):
    path = write(tmp_path, VALID + "bogus: 1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "finetune"), "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "bogus, line 10: unknown key" in proc.stderr and "Traceback" not in proc.stderr


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


def raises_config_error(path: Path) -> str:
    """The ConfigError's message; another exception (RecursionError, UnicodeDecodeError) fails the test."""
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)) or message == f"config file not found: {path}"
    assert "Traceback" not in message
    return message


def with_source(source: str, rest: str = "") -> str:
    return f"name: t\nmodel:\n  source: {source}\n{rest}"


# --- model.source: a discriminated union on `kind`


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "{kind: gguf, package: my_models.weights, file: tiny/model-q8_0.gguf}",
            GGUFSource(kind="gguf", package="my_models.weights", file="tiny/model-q8_0.gguf"),
        ),
        ("{kind: hub, id: EleutherAI/pythia-70m}", HubSource(kind="hub", id="EleutherAI/pythia-70m")),
        ("{kind: hub, id: gpt2, revision: v1.0}", HubSource(kind="hub", id="gpt2", revision="v1.0")),
        ("{kind: folder, path: ../models/base}", FolderSource(kind="folder", path="../models/base")),
        ("{kind: scratch, num_layers: 3}", ScratchSource(kind="scratch", num_layers=3)),
    ],
)
def test_model_source_kinds(tmp_path, source, expected):
    cfg = load_config(write(tmp_path, with_source(source)))
    assert cfg.model.source == expected and type(cfg.model.source) is type(expected)
    assert HubSource(kind="hub", id="x").revision == "main"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            with_source("{id: gpt2}"),
            "model.source, line 3: needs a `kind`: one of gguf, hub, folder, scratch",
        ),
        (
            with_source("\n    kind: hubb\n    id: gpt2"),
            "model.source.kind, line 4: must be one of gguf, hub, folder, scratch (got 'hubb')",
        ),
        (with_source("gpt2"), "model.source, line 3: must be a mapping with a `kind`"),
        (with_source("{kind: hub, id: gpt2, path: x}"), "model.source.path, line 3: unknown key"),
        (with_source("{kind: hub, id: /home/me/model}"), "model.source.id, line 3: must be a hub id"),
        (with_source("{kind: folder}"), "model.source.path, line 3: required key is missing"),
        (
            with_source("{kind: gguf, package: pkg, file: /opt/models/x.gguf}"),
            "model.source.file, line 3: must be a relative path inside the package",
        ),
        (with_source("{kind: gguf, package: pkg, file: ../x.gguf}"), "model.source.file, line 3"),
        (with_source("{kind: gguf, package: pkg, file: x.bin}"), "must name a .gguf file (got 'x.bin')"),
        (with_source("{kind: gguf, package: my-pkg, file: x.gguf}"), "model.source.package, line 3"),
        (
            with_source("\n    kind: scratch\n    vocab_size: lots"),
            "model.source.vocab_size, line 5: Input should be a valid integer",
        ),
        (
            with_source("{kind: scratch, hidden_size: 30, num_heads: 4}"),
            "hidden_size (30) must be divisible by num_heads (4)",
        ),
        (
            "name: t\nmodel:\n  name_or_path: gpt2\n",
            "model.name_or_path, line 3: unknown key (now model.source: {kind: hub",
        ),
        ("name: t\nmodel:\n  scratch: {}\n", "model.scratch, line 3: unknown key (now model.source"),
    ],
)
def test_model_source_errors(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_max_length_bound_applies_to_scratch_only(tmp_path):
    long = "tokenize:\n  max_length: 4096\n"
    hub = load_config(write(tmp_path, with_source("{kind: hub, id: gpt2}", long)))
    assert hub.tokenize.max_length == 4096
    message = raises_config_error(write(tmp_path, with_source("{kind: scratch}", long)))
    assert "tokenize.max_length (4096) exceeds model.source.max_position_embeddings (512)" in message


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


def test_schema_resolves_no_paths():
    """Workspace resolution lives in tasks/common/io.py; the schema holds only the raw `workspace` string."""
    import pipeline_config.schema as schema

    assert not hasattr(schema, "REPO_ROOT")
    assert not hasattr(schema.PipelineConfig, "workspace_path")


# --- the loader: every problem with the file is a ConfigError naming it


def test_binary_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert "not a text file (byte 0x89 at offset 0 is not UTF-8)" in raises_config_error(path)


def test_nul_byte(tmp_path):
    assert "not a text file (NUL byte at offset 7)" in raises_config_error(write(tmp_path, "name: t\0\n"))


def test_oversized_file(tmp_path):
    path = write(tmp_path, "# " + "x" * (2 << 20) + "\n")
    assert "not a config file (larger than 1024 KiB)" in raises_config_error(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: t\nname: u\n", "name: duplicate key, at lines 1 and 2"),
        (VALID + "  lora: {r: 2}\n", "train.lora: duplicate key, at lines 8 and 10"),
        (
            VALID.replace("    r: 8", "    r: 8\n    alpha: 4\n    r: 16"),
            "train.lora.r: duplicate key, at lines 9 and 11",
        ),
        (with_source("{kind: hub, id: a, id: b}"), "model.source.id: duplicate key, at lines 3 and 3"),
    ],
)
def test_duplicate_keys(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_merge_key_may_be_overridden(tmp_path):
    text = VALID.replace("    r: 8", "    <<: {r: 2, alpha: 4}\n    r: 8")
    lora = load_config(write(tmp_path, text)).train.lora
    assert (lora.r, lora.alpha) == (8, 4)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: &x [*x]\n", "a.0, line 1: self-referencing alias"),
        ("name: &n {a: *n}\n", "name.a, line 1: self-referencing alias"),
        (
            with_source("&s {kind: hub, id: gpt2, extra: [1, *s]}"),
            "model.source.extra.1, line 3: self-referencing",
        ),
        ("&top {name: t, model: *top}\n", "model, line 1: self-referencing alias"),
    ],
)
def test_self_referencing_alias(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_alias_bomb_and_deep_nesting(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert "aliases expand to more than 100000 values" in raises_config_error(
        write(tmp_path, "\n".join(levels))
    )
    deep = "a: " + "[" * 20000 + "]" * 20000 + "\n"
    assert "not valid YAML: nested too deeply" in raises_config_error(write(tmp_path, deep))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty config file"),
        ("# just a comment\n", "empty config file"),
        (
            "- name: t\n",
            "expected a mapping of sections (name, model, train, ...) at the top level, got list",
        ),
        ("just a string\n", "at the top level, got str"),
        ("name: t\nmodel: [\n", "not valid YAML"),
        ("---\nname: t\n---\nname: u\n", "not valid YAML: expected a single document"),
    ],
)
def test_unusable_files(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_directory_and_missing_file(tmp_path):
    assert raises_config_error(tmp_path) == f"{tmp_path}: is a directory, not a config file"
    assert raises_config_error(tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"


# --- closed choices: the values transformers accepts


def test_choice_lists_equal_transformers_enums():
    """Fails when a transformers upgrade adds or removes a scheduler or optimizer: update schema.py."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert SCHEDULER_TYPES == {e.value for e in SchedulerType} and len(SCHEDULER_TYPES) == len(SchedulerType)
    assert OPTIMIZER_NAMES == {e.value for e in OptimizerNames} and len(OPTIMIZER_NAMES) == len(
        OptimizerNames
    )


def test_loading_a_config_does_not_import_transformers():
    code = (
        "import sys; from pipeline_config import load_config; "
        f"load_config({str(REPO / 'pipeline_config/tiny.yaml')!r}); "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr


def with_train(tmp_path: Path, lines: str) -> Path:
    return write(tmp_path, VALID.replace("  method: lora\n", f"  method: lora\n{lines}"))


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            "  lr_scheduler: cosin\n",
            "train.lr_scheduler, line 8: not a transformers SchedulerType value; did you mean 'cosine'",
        ),
        ("  optim: adamw\n", "train.optim, line 8: not a transformers OptimizerNames value; did you mean"),
        ("  optim: adamw\n", "'adamw_torch'"),
        ("  optim: zzz\n", "one of: adafactor, adagrad,"),
        ("  lr_scheduler: reduce_lr_on_plateau\n", "'reduce_lr_on_plateau' needs train.eval_steps"),
        ("  lr_scheduler: cosine_with_min_lr\n", "needs transformers' lr_scheduler_kwargs (min_lr)"),
        ("  optim: galore_adamw\n", "'galore_adamw' needs transformers' optim_target_modules"),
        ("  early_stopping_patience: 2\n", "train.early_stopping_patience need train.eval_steps"),
        (
            "  eval_steps: 10\n  save_steps: 15\n  load_best_model_at_end: true\n",
            "needs train.save_steps, a multiple of train.eval_steps (got save_steps 15, eval_steps 10)",
        ),
    ],
)
def test_train_choices(tmp_path, lines, expected):
    assert expected in raises_config_error(with_train(tmp_path, lines))


def test_every_usable_choice_loads(tmp_path):
    schedulers = SCHEDULER_TYPES - {"cosine_with_min_lr", "cosine_warmup_with_min_lr"}
    for name in sorted(schedulers):
        cfg = load_config(with_train(tmp_path, f"  lr_scheduler: {name}\n  eval_steps: 10\n"))
        assert cfg.train.lr_scheduler == name
    for name in sorted(n for n in OPTIMIZER_NAMES if not n.startswith(("galore_", "apollo_"))):
        assert load_config(with_train(tmp_path, f"  optim: {name}\n")).train.optim == name


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "register:\n  primary_metric: heldout.perplexity\n",
            "register.primary_metric: the heldout suite has no metric 'perplexity'; it computes: nll,",
        ),
        (
            "register:\n  primary_metric: humaneval.pass_at_1\n",
            "register.primary_metric: unknown suite 'humaneval' in metric 'humaneval.pass_at_1'",
        ),  # HumanEval is not enabled in this profile
        (
            "register:\n  guards:\n    - {metric: completion.edit_similarity, margin: 0.1}\n",
            "register.guards[0].metric: unknown suite 'completion'",
        ),
        (
            "register:\n  guards:\n    - {metric: heldout.rougeL, margin: -0.1}\n",
            "register.guards.0.margin, line 12: must be >= 0: it is how much worse than the base",
        ),
        (
            "register:\n  must_beat: [echo_input]\n",
            "register.must_beat: echo_input is not scored on heldout.bits_per_byte",
        ),
        ("register:\n  must_beat: [champion]\n", "unknown baseline(s) ['champion']; known: base,"),
    ],
)
def test_gate_metrics_are_ones_the_evaluation_computes(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, VALID + text))


def test_gate_metrics_follow_the_enabled_benchmarks(tmp_path):
    text = (
        "evaluate:\n  humaneval: {enabled: true, samples: 5, k: [1, 5]}\n  completion: {next_line: 10}\n"
        "register:\n  primary_metric: heldout.rougeL_written\n  must_beat: [base, echo_input]\n"
        "  guards:\n    - {metric: humaneval.pass_at_5, margin: 0.1}\n"
        "    - {metric: completion.exact_match, margin: 0}\n"
    )
    cfg = load_config(write(tmp_path, VALID + text))
    assert [g.metric for g in cfg.register.guards] == ["humaneval.pass_at_5", "completion.exact_match"]
