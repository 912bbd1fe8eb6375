"""Every seed recipe's profile through the whole flow, in miniature, on the CPU: all stages, registered.

Each profile runs with its real settings (method, quantization, LoRA targets, optimizer, template, FIM,
packing, its datasets' formats and columns, its synthesis) except what makes it small: the model is a
tiny random one of the profile's architecture (`model.miniature`), steps, samples and max_length shrink,
and the data is a small local copy shaped like the real one (tests/seed_data.py): the hub dataset a
profile names becomes a JSONL file with the same columns, scikit-learn becomes a small local tree, and
Code Alpaca's teacher is a fake chat server answering Self-Instruct prompts with tasks that pass their
tests. Offline, a profile whose hub dataset is not cached fails at plan time, naming it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.cli import main
from flows.finetune import STAGES, finetune
from pipeline_config import load_config
from tests.conftest import REPO
from tests.fake_chat import chat_reply
from tests.seed_data import SUBJECTS, TASKS, alpaca_records, qa_records, self_instruct_reply, write_jsonl

pytestmark = pytest.mark.slow

CONFIGS = REPO / "pipeline_config"
# profile -> (architecture class, template, where its training rows come from)
SEEDS = {
    "codegen350m_qlora.yaml": ("CodeGenForCausalLM", "codegen_task", "dataset"),  # 000
    "code_alpaca_full.yaml": ("LlamaForCausalLM", "alpaca", "self_instruct"),  # 001
    "phi3_mini_qlora.yaml": ("Phi3ForCausalLM", "chat", "dataset"),  # 002
    "starcoderbase1b_fim.yaml": ("GPTBigCodeForCausalLM", "alpaca", "docstring"),  # 003
    "pythia70m_full.yaml": ("GPTNeoXForCausalLM", "question_answer", "dataset"),  # 004
}
STEPS = 6
LEARNING_RATE = 1e-2  # a random model shows learning within a few steps only at a rate far above a real one's
TASKS_PER_REPLY = 6


def write_source_tree(root: Path) -> Path:
    """scikit-learn's stand-in: one module per subject, each task a documented function."""
    for param, *_ in SUBJECTS:
        functions = [t for t in TASKS if t.input.startswith(f"{param} =")]
        body = "\n\n".join(t.code.replace(":\n", f':\n    """{t.instruction}"""\n', 1) for t in functions)
        (root / "pkg").mkdir(parents=True, exist_ok=True)
        (root / "pkg" / f"{param}.py").write_text(body)
    return root


def dataset_file(source: dict, folder: Path) -> Path:
    """A local file shaped like the dataset the profile names."""
    records = qa_records() if source["format"] == "prompt_completion" else alpaca_records()
    return write_jsonl(folder / f"{source['name']}.jsonl", records)


def miniature_profile(profile: str, tmp_path: Path, teacher_url: str | None) -> Path:
    raw = yaml.safe_load((CONFIGS / profile).read_text())
    raw["workspace"] = str(tmp_path / "ws")
    raw["model"]["miniature"] = True
    raw["scrape"] = {"sources": ["local"], "local_dirs": [str(write_source_tree(tmp_path / "src"))]}
    for source in raw.get("datasets", []):
        source.pop("hub")
        source["files"] = [str(dataset_file(source, tmp_path / "data"))]
    if teacher_url:  # Code Alpaca: Self-Instruct from the teacher, fewer rounds
        raw["synthesize"]["teacher"]["base_url"] = teacher_url
        raw["synthesize"]["self_instruct"].update(num_rounds=2, prompts_per_round=4)
    raw["tokenize"]["max_length"] = 512  # packing: several examples per block
    raw["split"] = {"test_fraction": 0.25, "max_test_rows": 4}
    train = raw["train"]
    train.update(device="cpu", max_steps=STEPS, logging_steps=1, learning_rate=LEARNING_RATE)
    if "eval_steps" in train:  # the recipe's evaluation, checkpoints and best-model choice, every 3 steps
        train["eval_steps"] = 3
    if "save_steps" in train:
        train["save_steps"] = 3
    raw["evaluate"] = {
        "max_samples": 4,
        "max_new_tokens": 8,
        "batch_size": 4,
        "humaneval": {"enabled": False},
        "sklearn_doctests": {"enabled": False},
        "completion": {"next_line": False, "fim": False},
    }
    raw.get("register", {}).pop("guards", None)  # their benchmarks are off here: held-out likelihood only
    path = tmp_path / f"mini-{profile}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def self_instruct_teacher(call) -> tuple:
    return chat_reply(self_instruct_reply(call.index * TASKS_PER_REPLY, TASKS_PER_REPLY))


def report(summary: dict, stage: str) -> dict:
    return json.loads((Path(summary["stages"][stage]["path"]) / "report.json").read_text())


def outputs(summary: dict, stage: str) -> dict:
    """What a stage's manifest hands on."""
    return json.loads((Path(summary["stages"][stage]["path"]) / "manifest.json").read_text())["outputs"]


def output(summary: dict, stage: str, name: str) -> Path:
    """A file or folder a stage's manifest names."""
    return Path(summary["stages"][stage]["path"]) / outputs(summary, stage)[name]


@pytest.mark.parametrize("profile", list(SEEDS))
def test_seed_profile_runs_end_to_end_in_miniature(profile, prefect_server, tmp_path, fake_chat):
    model_class, template, data = SEEDS[profile]
    teacher = fake_chat(self_instruct_teacher).url if data == "self_instruct" else None
    path = miniature_profile(profile, tmp_path, teacher)
    cfg = load_config(path)

    summary = finetune(config_path=str(path))

    assert list(summary["stages"]) == list(STAGES)
    assert {s["status"] for s in summary["stages"].values()} == {"executed"}
    base = outputs(summary, "base_model")
    card = base["card"]
    assert base["kind"] == "miniature" and card["model_class"] == model_class and card["parameters"] < 500_000
    cleaned, tokenized = report(summary, "clean"), report(summary, "tokenize")
    if data == "dataset":  # the profile's dataset, mapped by its format and columns, is all it trains on
        (source,) = [f"dataset:{d.name}" for d in cfg.datasets]
        mixed = report(summary, "datasets")["sources"][source]
        assert mixed["records"] == mixed["rows"] == len(TASKS) and sum(mixed["rejected"].values()) == 0
        assert set(cleaned["by_source"]) == {source} and cleaned["by_source"][source]["in"] == len(TASKS)
        assert set(tokenized["by_source"]) == {source}
        split = tokenized["by_source"][source]
        assert (split["train"], split["test"]) == (tokenized["train_examples"], tokenized["test_rows"])
        # the recipes' data is code; clean keeps these composed tasks (they share wording, not answers)
        assert cleaned["by_source"][source]["kept"] >= 0.9 * len(TASKS)
    elif data == "self_instruct":
        assert set(cleaned["by_source"]) == {"self_instruct"} and cleaned["rows_out"] >= 12
    else:
        assert set(cleaned["by_source"]) == {"docstring"} and cleaned["rows_out"] >= 24
    assert tokenized["template"] == template and tokenized["truncated"] == 0
    if cfg.tokenize.packing:
        assert tokenized["train_rows"] < tokenized["train_examples"]  # several examples per block
    if cfg.tokenize.fim_rate:  # StarCoder's vocabulary has the sentinels: none added
        assert tokenized["fim"]["rows"] > 0 and tokenized["fim"]["tokens_added"] == []

    trained = report(summary, "train")
    t = cfg.train
    assert (trained["method"], trained["device"], trained["steps"]) == (t.method, "cpu", STEPS)
    assert all(math.isfinite(x) for x in (trained["first_logged_loss"], trained["last_logged_loss"]))
    tuned = output(summary, "train", "model_dir")
    assert json.loads((tuned / "prompt_template.json").read_text())["name"] == template
    if t.method != "full":  # evaluation reads the merged weights; the adapter is kept beside them
        assert trained["merge"]["max_abs_logit_diff"] <= t.merge_tolerance
        adapter = json.loads((output(summary, "train", "adapter_dir") / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (
            t.lora.r,
            t.lora.alpha,
            t.lora.dropout,
        )
        assert sorted(adapter["target_modules"]) == sorted(t.lora.target_modules)

    evaluated = report(summary, "evaluate")
    before, after = (evaluated["means"][s]["heldout.nll"] for s in ("base", "finetuned"))
    assert after < before - 0.05  # the recipe learned, measured on held-out rows

    record = summary["mlflow"]
    assert record["model_name"] == cfg.register.model_name and int(record["version"]) >= 1
    version = mlflow.MlflowClient().get_model_version(record["model_name"], record["version"])
    assert version.tags["eval_set_key"] == evaluated["eval_set_key"]
    model_card = (Path(summary["stages"]["register"]["path"]) / "README.md").read_text()
    if data == "dataset":
        assert f"with the dataset `{cfg.datasets[0].name}`" in model_card
        assert "The mix, rows per source:" in model_card


def test_a_profiles_hub_dataset_missing_offline_fails_at_plan_time(tmp_path, capsys):
    """The real profile (its hub dataset), miniature model, offline and without the dataset cached."""
    raw = yaml.safe_load((CONFIGS / "codegen350m_qlora.yaml").read_text())
    raw.update(workspace=str(tmp_path / "ws"))
    raw["model"]["miniature"] = True
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "datasets[0] ('python_code_instructions_18k_alpaca').hub" in err
    assert "hf download iamtarun/python_code_instructions_18k_alpaca --repo-type dataset" in err
    assert not (tmp_path / "ws" / "stages").exists()  # nothing ran
