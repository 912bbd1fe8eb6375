"""Log the fine-tuned model to MLflow with the transformers flavor, register a version, apply the gate.

A version carries everything needed to use and to audit it: the weights (merged, or an adapter naming its
hub base), the tokenizer, the prompt template (also as MLflow's `prompt_template`, so `mlflow models
serve` formats requests as training did), the generation settings of the evaluation (the serving
signature's params and defaults), the resolved pipeline config, the stage and evaluation-set keys and the
git commit (MLmodel metadata, and version tags for search), the model card, and pinned requirements.

Every new version gets the alias `challenger`; whether it also takes `champion` is gate.py's paired
decision, recorded with its numbers and reason as version tags (`gate.*`) and in registration.json.

One version per model: the version is created with its `version_key` tag (the register key without the
tracking URI: tasks/registration/__init__.py) in one call, so a retry, a re-run after a crash, or the same
model registered through another URI of the same store finds it and finishes the job (gate, tags, aliases)
instead of adding a second version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_config.metrics import LIKELIHOOD
from pipeline_config.schema import RegisterConfig
from tasks.common import mlflow_store
from tasks.common.io import iter_jsonl, write_json
from tasks.common.templates import PromptTemplate
from tasks.common.versions import library_versions
from tasks.evaluation.metrics import likelihood, per_example_scores
from tasks.registration.describe import decision_markdown, description
from tasks.registration.gate import Decision, decide, from_record
from tasks.registration.serving import load_registered

SERVING_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors")
SIGNATURE_EXAMPLE = ("Write a Python function that adds two numbers.", "def add(a, b):\n    return a + b")


class RegistryUnavailable(RuntimeError):
    """The tracking server did not answer; another attempt may succeed (Prefect retries it)."""

    transient = True


@contextmanager
def reachable_registry(uri: str) -> Iterator[None]:
    """Turn MLflow's "API request ... failed with exception" (after its own HTTP retries) into one clear,
    retryable error; anything else (a bad name, a permission) is raised as it is."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        if "failed with exception" not in str(error):
            raise
        raise RegistryUnavailable(
            f"the MLflow registry at {uri} is unreachable ({str(error)[:200]}...). Nothing is lost: the "
            "evaluation stays in the workspace, and re-running the register stage "
            "(finetune run --config <profile> --only register) registers from it."
        ) from error


@dataclass(frozen=True)
class Candidate:
    """The model the pipeline hands to the registry, and the evidence about it."""

    model_dir: Path  # full weights (an adapter already merged by train), tokenizer, prompt_template.json
    base: Mapping  # the base_model stage's outputs: model_dir, card, hub_id for hub models
    suites: Mapping[str, Path]  # the evaluate stage's per-item outputs and scores, one file per suite
    metrics: Mapping  # the fine-tuned model's mean scores ("suite.metric")
    eval_set_key: str
    generation: Mapping  # max_new_tokens, stop, temperature: how the evaluation generated
    lineage: Mapping  # stage_keys, benchmark_keys, git_commit, config_hash
    config: Mapping  # the resolved pipeline config
    card: str  # the model card (README.md)
    version_key: str  # one version per key (tasks/registration/__init__.py `version_key`)
    adapter_dir: Path | None = None  # the LoRA adapter alone, when there is one
    training: Mapping = field(default_factory=dict)  # the train stage's report: steps, rows, losses


def pip_requirements() -> list[str]:
    """The serving environment pinned to what trained and evaluated the model (inference would crash on
    a missing torchvision if MLflow inferred them)."""
    return [f"{name}=={version}" for name, version in library_versions(SERVING_LIBRARIES).items()]


def log_model(c: Candidate, run_id: str):
    """Log with the transformers flavor (no registration: see `register_version`).

    A LoRA adapter on a hub base is logged alone and names its base id. Otherwise the merged weights the
    train stage checked and the evaluation scored are logged (a GGUF or scratch base lives in the
    workspace, which may be cleaned), so the registered model loads on its own.
    """
    import mlflow
    from huggingface_hub import ModelCard
    from mlflow.models import infer_signature
    from transformers import AutoModelForCausalLM

    from tasks.common.models import load_tokenizer

    tokenizer = load_tokenizer(c.model_dir)
    template = PromptTemplate.load(c.model_dir)
    hub_id = c.base.get("hub_id")
    # a QLoRA adapter belongs to the 4-bit base it was trained against: it ships merged into those weights
    is_adapter = bool(hub_id and c.adapter_dir and c.config.get("train", {}).get("method") == "lora")
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(c.base["model_dir"]), str(c.adapter_dir)
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(c.model_dir)
    defaults = {"max_new_tokens": int(c.generation["max_new_tokens"]), "do_sample": False}
    metadata = {
        "template": template.to_dict(),
        "generation": dict(c.generation),
        "eval_set_key": c.eval_set_key,
        **c.lineage,
        "config": c.config,
    }
    with mlflow.start_run(run_id=run_id):
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            pip_requirements=pip_requirements(),
            base_model_path=hub_id if is_adapter else None,
            signature=infer_signature([SIGNATURE_EXAMPLE[0]], [SIGNATURE_EXAMPLE[1]], params=defaults),
            model_config=defaults,  # serving defaults: greedy, the evaluation's budget
            prompt_template=serving_template(template),
            metadata=metadata,
            model_card=ModelCard(c.card),
        )


def serving_template(template: PromptTemplate) -> str:
    """MLflow's `prompt_template` (one `{prompt}` field, other braces doubled): the template's prompt for
    an instruction without an input, as `finetune generate` formats one (a template that always has an
    Input block, such as codegen_task, gets it empty)."""
    marker = "\x00prompt\x00"
    rendered = template.format(marker)
    return rendered.replace("{", "{{").replace("}", "}}").replace(marker, "{prompt}")


def version_tags(c: Candidate, run_id: str) -> dict[str, str]:
    """Searchable facts of a version: its scores, what it was evaluated on and what it was built from."""
    tags = {f"metric.{name}": value for name, value in c.metrics.items()}
    tags |= {f"stage.{name}.key": key for name, key in c.lineage["stage_keys"].items()}
    tags |= {f"benchmark.{name}.key": key for name, key in c.lineage.get("benchmark_keys", {}).items()}
    tags |= {f"sandbox.{stage}": backend for stage, backend in c.lineage.get("sandbox", {}).items()}
    tags |= {
        "version_key": c.version_key,
        "pipeline_run_id": run_id,
        "eval_set_key": c.eval_set_key,  # scores compare on one set only
        # generated scores pair only within one precision (likelihoods are fp32's everywhere)
        "eval_generation_precision": c.generation.get("precision", "fp32"),
        "git_commit": c.lineage["git_commit"],
        "config_hash": c.lineage["config_hash"],
    }
    return {k: str(v) for k, v in tags.items()}


def find_version(client, model_name: str, version_key: str):
    """The version an earlier registration of this very model registered, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{model_name}' and tags.version_key = '{version_key}'")
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return max(found, key=lambda v: int(v.version), default=None)


def version_by_alias(client, model_name: str, alias: str = "champion"):
    """The version holding `alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        # no such model, or no such alias; an unreachable server is not "no champion"
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def why_no_champion(client, model_name: str) -> str:
    """Why no version holds the "champion" alias, when the registry knows: the challenger's gate reason."""
    challenger = version_by_alias(client, model_name, "challenger")
    if challenger is None:
        return ""  # no such model: MLflow's own message says enough
    reason = challenger.tags.get("gate.reason", "no gate decision recorded")
    return (
        f"; no version of {model_name} is champion: v{challenger.version}, the challenger, was not promoted "
        f"({reason}); --model challenger loads it"
    )


def scores_from(path: Path, system: str, metric: str) -> dict[str, float]:
    """{item id: score} of one system on one metric, from an evaluation's per-item file."""
    return {
        r["id"]: r["scores"][system][metric]
        for r in iter_jsonl(path)
        if metric in r.get("scores", {}).get(system, {})
    }


def evidence(c: Candidate, metrics: list[str], systems: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """evidence[metric][system]: per-item scores read from the evaluation's suite files."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in metrics:
        suite, metric = name.split(".", 1)
        out[name] = {s: scores_from(c.suites[suite], s, metric) for s in systems} if suite in c.suites else {}
    return out


def suite_key(c: Candidate, suite: str) -> str | None:
    return c.eval_set_key if suite == "heldout" else c.lineage.get("benchmark_keys", {}).get(suite)


def champion_scores(champion, primary: str, c: Candidate, cache: Path, batch_size: int) -> dict | None:
    """The champion's per-item scores on the primary metric, on this evaluation's items; None when it
    cannot have them (another benchmark set that only the evaluate stage can score).

    Scored on these very items before (same set key): read from its run's evaluation. Otherwise, on the
    held-out suite, it is scored again here as the evaluation scores (its likelihood of the references,
    or its greedy generations), cached by model version and evaluation-set key.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    suite, metric = primary.split(".", 1)
    theirs = champion.tags.get("eval_set_key" if suite == "heldout" else f"benchmark.{suite}.key")
    if theirs is not None and theirs == suite_key(c, suite) and same_precision(champion, metric, c):
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=champion.run_id, artifact_path=f"stages/evaluate/{c.suites[suite].name}"
            )
            return scores_from(Path(path), "finetuned", metric)
        except (MlflowException, OSError, KeyError):
            pass  # its run or its artifacts are gone: score it again below
    if suite != "heldout":
        return None
    rows = list(iter_jsonl(c.suites["heldout"]))
    precision = "fp32" if metric in LIKELIHOOD else c.generation.get("precision", "fp32")
    cached = cache / f"{champion.name}-v{champion.version}-{c.eval_set_key}-{metric}-{precision}.json"
    if not cached.is_file():
        loaded = load_registered(f"models:/{champion.name}/{champion.version}", precision)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_json(cached, rescore_heldout(loaded, rows, metric, c, batch_size))
    return json.loads(cached.read_text())


def same_precision(champion, metric: str, c: Candidate) -> bool:
    """Whether the champion's scores on `metric` were computed as ours were: likelihoods always in fp32,
    generations in the evaluation's precision (a version registered before it was recorded: fp32)."""
    if metric in LIKELIHOOD:
        return True
    return champion.tags.get("eval_generation_precision", "fp32") == c.generation.get("precision", "fp32")


def rescore_heldout(loaded, rows: list[dict], metric: str, c: Candidate, batch_size: int) -> dict[str, float]:
    """A registered model's per-item `metric` on the held-out items, computed as the evaluation does."""
    if metric in LIKELIHOOD:
        encoded = [reference_row(loaded.tokenizer, r["prompt"], r["reference"]) for r in rows]
        per = likelihood(loaded.model, loaded.tokenizer, encoded, batch_size)
        return {r["id"]: per[metric][i] for i, r in enumerate(rows)}
    rows = [r for r in rows if metric in r["scores"].get("finetuned", {})]  # the generated items
    outputs = loaded.complete([r["prompt"] for r in rows], c.generation["max_new_tokens"], batch_size)
    texts = [o.text.strip() for o in outputs]
    per = per_example_scores(texts, [r["reference"] for r in rows], [r.get("input", "") for r in rows])
    return {r["id"]: per[metric][i] for i, r in enumerate(rows)}


def reference_row(tokenizer, prompt: str, reference: str) -> dict:
    """prompt + reference + end of sequence as the tokenize stage encodes them, the prompt masked."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(reference, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + answer, "labels": [-100] * len(prompt_ids) + answer}


def register_model(
    c: Candidate,
    out_dir: Path,
    run_id: str,
    cfg: RegisterConfig,
    cache: Path,
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """Register `c` (or find the version an earlier attempt registered), gate it, move the aliases.

    `cache`: where re-scored champions' outputs are kept.
    """
    (out_dir / "README.md").write_text(c.card)  # the card beside the model in the workspace
    with reachable_registry(mlflow_store.tracking_uri()):
        return _register(c, out_dir, run_id, cfg, cache, batch_size, seed)


def _register(c: Candidate, out_dir: Path, run_id: str, cfg: RegisterConfig, cache, batch_size, seed) -> dict:
    import mlflow

    client = mlflow_store.client()
    name = cfg.model_name
    existing = find_version(client, name, c.version_key)
    decision = None
    if existing and "gate.decision" in existing.tags:  # decided before a crash: keep that decision
        decision = from_record(json.loads(existing.tags["gate.decision"]))
    if decision is None:
        decision = gate(c, cfg, client, cache, batch_size, seed)
    tags = version_tags(c, run_id)
    if existing:
        version = str(existing.version)
    else:
        info = log_model(c, run_id)
        # created with its version_key tag in one call: a retry after any later crash finds it
        version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    client.update_model_version(name, version, description(c, decision))
    tags |= {
        "gate.promoted": str(decision.promote),
        "gate.reason": decision.reason,
        "gate.decision": json.dumps(decision.record()),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, "challenger", version)
    if decision.promote:
        client.set_registered_model_alias(name, "champion", version)
    record = {
        "tracking_uri": mlflow_store.tracking_uri(),
        "run_id": run_id,
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "aliases": sorted(client.get_model_version(name, version).aliases),
        "promoted": decision.promote,
        "reused_version": existing is not None,
        "gate": decision.record(),
    }
    write_json(out_dir / "registration.json", record)
    (out_dir / "report.md").write_text(decision_markdown(record))  # the Prefect artifact of the decision
    return {"rows_in": 1, "rows_out": 1, **record}


def gate(c: Candidate, cfg: RegisterConfig, client, cache: Path, batch_size: int, seed: int) -> Decision:
    champion = version_by_alias(client, cfg.model_name)
    guards = [(g.metric, g.margin) for g in cfg.guards]
    systems = ["finetuned", "base", *cfg.must_beat]
    found = evidence(c, [cfg.primary_metric, *(m for m, _ in guards)], systems)
    theirs = champion_scores(champion, cfg.primary_metric, c, cache, batch_size) if champion else None
    if champion is not None and theirs is None:
        reason = (
            f"the champion v{champion.version} was scored on another {cfg.primary_metric.split('.')[0]} set, "
            "which only the evaluate stage can score: no paired evidence against it"
        )
        return Decision(False, reason, cfg.primary_metric, champion_version=str(champion.version))
    version = str(champion.version) if champion else None
    return decide(
        found, cfg.primary_metric, cfg.must_beat, cfg.min_improvement, guards, theirs, version, seed
    )
