"""What the pipeline run's MLflow page says before any chart: is the fine-tuned model better, and why was it
(not) promoted. flows/tracking.py `log_stage` calls `log_page` as it logs each stage:

- evaluate: `stages/evaluate/comparison.png` (every system's headline scores with their 95% intervals,
  tasks/evaluation/chart.py) and a first run description: the scores table, "not registered in this run";
- register: the gate's decision as `decision.*` tags (searchable: `tags."decision.promoted" = 'true'`), the
  chart again with the gate's paired comparisons as a last panel, and the description (the
  `mlflow.note.content` tag, markdown) rewritten: verdict, reason, the gate's comparisons, the scores;
- clean and tokenize: the data the model saw as MLflow dataset inputs (the kept pairs; the train and test
  splits), each with its source, its digest (the stage key; the test split's is the evaluation-set key the
  model version is tagged with) and its row count, read from the stage's report, not recounted.

The tables are tasks/evaluation/report.py's and tasks/registration/gate.py's: the same as in the Prefect
artifacts and the model card.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.evaluation.chart import plot_comparison
from tasks.evaluation.report import HEADLINE_METRICS, systems_table
from tasks.registration.gate import Comparison, gate_table

NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
NOTE_CHARS = 7900  # a tag value holds at most 8000 characters
TAG_CHARS = 5000
EVALUATE_ARTIFACTS = "stages/evaluate"
CHART = "comparison.png"
SEE_ALSO = (
    f"Chart: `{EVALUATE_ARTIFACTS}/{CHART}` (these scores and the gate's intervals); the loss: "
    f"`stages/train/loss.png`; every paired comparison with its power: `{EVALUATE_ARTIFACTS}/report.md`; "
    "the model card: `stages/register/README.md`. Headline charts: the `headline` section of Model metrics."
)


def log_page(client, run_id: str, stage: str, key: str, report: Mapping[str, Any], folder: Path) -> None:
    """What `stage` adds to the run's page (see the module docstring); other stages add nothing here."""
    from mlflow.entities import RunTag

    if stage in ("clean", "tokenize"):
        if datasets := dataset_inputs(stage, key, report, folder):
            log_inputs(client, run_id, datasets)
    elif stage == "evaluate":
        log_chart(client, run_id, report)
        client.log_batch(run_id, tags=[RunTag(NOTE, description(report, None))])
    elif stage == "register" and "gate" in report:
        evaluation = logged_json(run_id, f"{EVALUATE_ARTIFACTS}/report.json")
        if evaluation is not None:
            log_chart(client, run_id, evaluation, report["gate"])
        tags = decision_tags(report) | {NOTE: description(evaluation, report)}
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def log_inputs(client, run_id: str, datasets: list, attempts: int = 3) -> None:
    """The datasets as the run's inputs. MLflow's store creates a dataset row per (experiment, name,
    digest) with a check-then-insert: two runs of one config logging the same dataset at once collide on
    that row, and the later insert fails although the row it wanted now exists; a retry links to it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except MlflowException as error:
            if "UNIQUE constraint" not in str(error) or attempt == attempts - 1:
                raise


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decision_tags(registration: Mapping[str, Any]) -> dict[str, str]:
    """The register report's decision as run tags: `decision.promoted` (true/false), `decision.reason`,
    `decision.metric`, `decision.model_version`, `decision.aliases`, and one tag per paired comparison:
    `decision.vs_base`, `decision.vs_<baseline>`, `decision.vs_champion`, `decision.guard.<metric>`
    (`-0.0020 [-0.0026, -0.0015], n 8, lower is better, gain bound > 0: passed`)."""
    gate = registration["gate"]
    tags = {
        "decision.promoted": str(bool(registration["promoted"])).lower(),
        "decision.reason": gate["reason"],
        "decision.metric": gate["metric"],
        "decision.model_version": f"{registration['model_name']} v{registration['version']}",
        "decision.aliases": ", ".join(registration.get("aliases", [])),
    }
    if gate.get("champion_version") is None:
        tags["decision.vs_champion"] = "no champion yet"
    else:  # replaced below when there is paired evidence against it
        tags["decision.vs_champion"] = f"champion v{gate['champion_version']}: no paired comparison"
    for record in gate["comparisons"]:
        c = Comparison(**record)
        if c.role == "guard":
            tags[f"decision.guard.{c.metric}"] = c.short()
        elif c.role == "champion":
            tags["decision.vs_champion"] = f"{c.against}: {c.short()}"
        else:
            tags[f"decision.vs_{c.against}"] = c.short()
    return {k: cut(str(v), TAG_CHARS) for k, v in tags.items()}


def description(evaluation: Mapping | None, registration: Mapping | None) -> str:
    """The run's description, markdown: the verdict as its heading, the reason, the gate's comparisons, then
    systems x headline metrics (mean and 95% interval), then where the charts and full tables are."""
    parts = []
    metrics = list(HEADLINE_METRICS)
    if registration is not None:
        gate = registration["gate"]
        model = f"{registration['model_name']} v{registration['version']}"
        if registration["promoted"]:
            parts.append(f"## Promoted: {model} is the champion")
        else:
            champion = gate.get("champion_version")
            where = f"the champion stays v{champion}" if champion else "there is no champion"
            parts.append(f"## Not promoted: {model} is the challenger ({where})")
        parts += [
            f"**Why:** {gate['reason']}.",
            f"### The gate on `{gate['metric']}`: paired comparisons (challenger - other)",
            gate_table(gate) or "No comparison could be made.",
        ]
        metrics = [gate["metric"], *metrics]
    else:
        parts.append("## Evaluated, not registered in this run (the register stage has not run)")
    if evaluation is not None:
        parts += [
            "### Scores on the same items (mean, 95% interval)",
            systems_table(evaluation, metrics),
        ]
    parts.append(SEE_ALSO)
    return cut("\n\n".join(parts) + "\n", NOTE_CHARS)


def log_chart(client, run_id: str, evaluation: Mapping, gate: Mapping | None = None) -> None:
    """`stages/evaluate/comparison.png`, drawn again (and replaced) once the gate has decided."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHART
        plot_comparison(evaluation, path, gate)
        client.log_artifact(run_id, str(path), artifact_path=EVALUATE_ARTIFACTS)


def logged_json(run_id: str, artifact_path: str) -> dict | None:
    """A JSON artifact of the run, or None when it is not there (the stage was not logged with numbers)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.common.mlflow_store import tracking_uri

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=tmp, tracking_uri=tracking_uri()
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def dataset_inputs(stage: str, key: str, report: Mapping[str, Any], folder: Path) -> list:
    """The datasets a stage hands on, as MLflow dataset inputs: name, digest (a content key), source (the
    file or folder in the workspace) and profile (row counts from the stage's report)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    manifest = folder / "manifest.json"
    outputs = json.loads(manifest.read_text()).get("outputs", {}) if manifest.is_file() else {}
    if stage == "clean":
        found = [
            (
                "clean/pairs",
                key,
                folder / outputs.get("pairs", "pairs.jsonl"),
                "cleaned",
                {"num_rows": "rows_out"},
            )
        ]
    elif stage == "tokenize":
        data = folder / outputs.get("dataset_dir", "dataset")
        test_key = report.get("eval_set_key") or outputs.get("eval_set_key") or key
        found = [
            (
                "tokenize/train",
                key,
                data / "train",
                "training",
                {"num_rows": "train_rows", "tokens": "train_tokens"},
            ),
            ("tokenize/test", test_key, data / "test", "evaluation", {"num_rows": "test_rows"}),
        ]
    else:
        return []
    inputs = []
    for name, digest, source, context, counts in found:
        profile = {field: report[entry] for field, entry in counts.items() if entry in report}
        if "num_rows" not in profile:
            continue  # a report of an older shape: no count to show
        dataset = Dataset(
            name=name,
            digest=str(digest),
            source_type="local",
            source=json.dumps({"uri": str(source)}),
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs
