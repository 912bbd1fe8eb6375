"""The registered model's card: a README.md in the Hugging Face model-card format (YAML metadata, then
markdown): base model and licence, where the data came from and how much survived each stage, the training
settings, the evaluation table with its baselines and intervals, the prompt template and the lineage keys.
Saved beside the model in the workspace and logged with the model version."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from tasks.common.templates import PromptTemplate
from tasks.evaluation.report import comparisons_table, generation_line, suites_line, table

DATA_STAGES = ("scrape", "synthesize", "datasets", "clean", "tokenize")
TRAIN_FACTS = (
    "method", "device", "precision", "steps", "train_runtime_s", "first_logged_loss", "last_logged_loss"
)  # fmt: skip


def mix_rows(reports: Mapping[str, Mapping]) -> list[list]:
    """Per source: rows into clean, kept by it, and in the train and test splits (clean's and tokenize's
    `by_source`); empty when the reports predate them."""
    cleaned = reports.get("clean", {}).get("by_source", {})
    split = reports.get("tokenize", {}).get("by_source", {})
    return [
        [
            source,
            entry["in"],
            entry["kept"],
            split.get(source, {}).get("train", 0),
            split.get(source, {}).get("test", 0),
        ]
        for source, entry in cleaned.items()
    ]


def model_card(
    model_name: str,
    base_card: Mapping,
    reports: Mapping[str, Mapping],
    config: Mapping,
    template: PromptTemplate,
    lineage: Mapping,
) -> str:
    """`reports`: the stage reports by stage name (those missing from the workspace are left out)."""
    evaluation = reports["evaluate"]
    meta = {
        "base_model": base_card.get("name", "unknown"),
        "license": str(base_card.get("license", "unknown")).lower(),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["code", "python", "fine-tuned", config["train"]["method"]],
    }
    data_rows = [
        [stage, lineage["stage_keys"].get(stage, ""), reports[stage]["rows_in"], reports[stage]["rows_out"]]
        for stage in DATA_STAGES
        if stage in reports and (stage != "datasets" or config.get("datasets"))
    ]
    train_report = reports.get("train", {})
    train_settings = {k: v for k, v in config["train"].items() if v not in (None, {}, [])}
    parts = [
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---",
        f"# {model_name}",
        f"Fine-tuned from {base_card.get('name', 'an unnamed base model')} "
        f"({base_card.get('origin', 'origin unknown')}; licence {base_card.get('license', 'unknown')}; "
        f"{base_card.get('parameters', '?')} parameters) by the finetune pipeline, "
        f"profile `{config['name']}`.",
        "## Data",
        f"Scraped from `{config['scrape'].get('package')}`, synthesized"
        + "".join(f", with the dataset `{d['name']}`" for d in config.get("datasets", []))
        + ", cleaned and tokenized; rows in and out of each stage:",
        table(["stage", "key", "rows in", "rows out"], data_rows),
    ]
    if mix := mix_rows(reports):
        parts += ["The mix, rows per source:", table(["source", "into clean", "kept", "train", "test"], mix)]
    if split := reports.get("tokenize", {}).get("split"):
        parts.append(
            f"Held out by source: {split['held_out_sources']} of {split['sources']} sources "
            f"({split['held_out_rows']} rows); {split['train_dropped_as_leak']} training rows dropped as "
            "copies of held-out code."
        )
    parts += [
        "## Training",
        table(["setting", "value"], [[k, v] for k, v in train_settings.items()]),
        table(["result", "value"], [[k, train_report[k]] for k in TRAIN_FACTS if k in train_report]),
        "## Evaluation",
        f"On the held-out set (key `{evaluation['eval_set_key']}`), {evaluation['rows_in']} rows. "
        + suites_line(evaluation)
        + " "
        + generation_line(evaluation["generation"]),
        comparisons_table(evaluation),
    ]
    parts += [
        "## Prompt template",
        "Prompts are formatted exactly as in training (`finetune generate` applies it):",
        f"```text\n{template.without_input}```",
        "## Lineage",
        table(
            ["what", "value"],
            [["git commit", lineage["git_commit"]], ["config hash", lineage["config_hash"]]]
            + [[f"stage {k}", v] for k, v in lineage["stage_keys"].items()]
            + [[f"benchmark {k}", v] for k, v in lineage.get("benchmark_keys", {}).items()]
            + [[f"sandbox of {k}", v] for k, v in lineage.get("sandbox", {}).items()],
        ),
    ]
    return "\n\n".join(parts) + "\n"
