"""The whole pipeline as a user starts it: `finetune run` processes, timed from outside.

Run alone: `python -m benchmarks.run pipeline_rerun` (BENCH_CONFIG picks the profile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs

WORK = Path(__file__).resolve().parent / "work"


def finetune_run(config: str, env: dict) -> dict:
    """One `finetune run --json` process; its JSON summary (stages with status, seconds and path)."""
    finetune = Path(sys.executable).parent / "finetune"
    proc = subprocess.run(
        [str(finetune), "run", "--config", config, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        sys.exit(f"finetune run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{\n") :])


@benchmark("pipeline_rerun")
def pipeline_rerun(config: str | None = None) -> dict:
    """A cold `finetune run` (fresh workspace, MLflow store and Prefect home) against an unchanged warm
    re-run, each a separate `finetune` process as a user would start it. Profile: $BENCH_CONFIG (default
    pipeline_config/quick.yaml, ~5 minutes; offline.yaml, the `make run` profile, takes ~30 minutes for the
    pair; tiny.yaml a minute). value: warm seconds; ratio = cold / warm wall time."""
    config = config or os.environ.get("BENCH_CONFIG", "pipeline_config/quick.yaml")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = {
        **os.environ,
        "FINETUNE_WORKSPACE": str(WORK / "workspace"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (WORK / "artifacts").as_uri(),
        "PREFECT_HOME": str(WORK / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # once each, cold first: the warm run is the cold run's cache hit
    runs = time_runs(
        {"cold": lambda: finetune_run(config, env), "warm": lambda: finetune_run(config, env)},
        repeats=1,
        warmup=0,
    )
    cold_s, warm_s = runs["cold"].median, runs["warm"].median
    statuses = {s["status"] for s in runs["warm"].result["stages"].values()}
    return {
        "value": round(warm_s, 2),
        "unit": "s",
        "ratio": round(cold_s / warm_s, 2),
        "detail": {
            "config": config,
            "cold_s": round(cold_s, 2),
            "warm_s": round(warm_s, 2),
            "warm_statuses": sorted(statuses),
            "cold_stage_seconds": {n: s["seconds"] for n, s in runs["cold"].result["stages"].items()},
            "ratio_means": "cold / warm wall time (higher is better)",
        },
    }


MODEL_STAGES = ("synthesize", "train", "evaluate")
# every precision setting pinned to fp32: what the default run computed in before bf16
ALL_FP32 = {"train": {"precision": "fp32"}, "evaluate": {"precision": "fp32"}}


def fp32_profile(config: str, folder: Path) -> Path:
    """`config` with train, evaluate and the local teacher in fp32, written beside the runs."""
    import yaml

    raw = yaml.safe_load(Path(config).read_text())
    for section, values in ALL_FP32.items():
        raw.setdefault(section, {}).update(values)
    raw.setdefault("synthesize", {}).setdefault("teacher", {})["precision"] = "fp32"
    path = folder / f"{Path(config).stem}-fp32.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def fresh_env(folder: Path) -> dict:
    """A `finetune` environment with its own workspace (teacher cache included), MLflow store and Prefect
    home under `folder`: a cold run."""
    return {
        **os.environ,
        "FINETUNE_WORKSPACE": str(folder / "workspace"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (folder / "artifacts").as_uri(),
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def suite_scores(summary: dict) -> dict[str, dict[str, dict]]:
    """{suite: {item id: the fine-tuned model's scores}} from a run's per-suite evaluation files."""
    folder = Path(summary["stages"]["evaluate"]["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest.get("outputs", {}).get("suite_files", {"heldout": "predictions.jsonl"})
    return {
        suite: {
            r["id"]: r["scores"]["finetuned"]
            for r in map(json.loads, (folder / name).read_text().splitlines())
        }
        for suite, name in files.items()
    }


def paired_runs(ours: dict, theirs: dict) -> dict:
    """Per suite and metric, ours - theirs on the items both runs scored (paired, 95% interval)."""
    from tasks.evaluation.paired import compare

    out = {}
    for suite in ours.keys() & theirs.keys():
        metrics = {m for scores in ours[suite].values() for m in scores}
        for metric in sorted(metrics):
            shared = [
                i for i in ours[suite] if metric in ours[suite][i] and metric in theirs[suite].get(i, {})
            ]
            if shared:
                entry = compare(
                    [ours[suite][i][metric] for i in shared], [theirs[suite][i][metric] for i in shared]
                )
                out[f"{suite}.{metric}"] = {k: entry[k] for k in ("n", "difference", "ci")}
    return out


def stage_report(summary: dict, stage: str) -> dict:
    return json.loads((Path(summary["stages"][stage]["path"]) / "report.json").read_text())


@benchmark("default_run_model_stages")
def default_run_model_stages(config: str = "pipeline_config/offline.yaml") -> dict:
    """Seconds of synthesize + train + evaluate in one cold default run (`make run`'s profile, fresh
    workspace, teacher cache and MLflow store), with every precision pinned to fp32 (the default run before
    bf16) and then with the defaults (auto: bf16 on a CPU with native bf16), each a separate `finetune run`
    process, once each (~32 minutes for the pair on 2 cores). Beside the time, what bf16 does to quality
    on the items both runs scored: the paired difference (default - fp32) of each of the fine-tuned model's
    per-item scores, suite by suite, with 95% intervals, and each run's scores against its base.
    value: default seconds; ratio = fp32 / default (goal >= 2, or the same time buying twice the work)."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    profiles = {"fp32": str(fp32_profile(config, WORK)), "default": config}
    summaries = {name: finetune_run(path, fresh_env(WORK / name)) for name, path in profiles.items()}
    seconds = {
        name: {s: round(summary["stages"][s]["seconds"], 1) for s in MODEL_STAGES}
        for name, summary in summaries.items()
    }
    totals = {name: round(sum(per.values()), 1) for name, per in seconds.items()}
    scores = {name: suite_scores(summary) for name, summary in summaries.items()}
    quality = paired_runs(scores["default"], scores["fp32"])
    runs = {}
    for name, summary in summaries.items():
        train, evaluate = stage_report(summary, "train"), stage_report(summary, "evaluate")
        heldout = evaluate["suites"]["heldout"]["metrics"]
        runs[name] = {
            "train_precision": train.get("precision"),
            "generation_precision": evaluate.get("precision", {}).get("generation"),
            "train_loss": train.get("train_loss"),
            "merge_max_abs_logit_diff": train.get("merge", {}).get("max_abs_logit_diff"),
            "heldout_nll": heldout["nll"]["systems"]["finetuned"]["mean"],
            "bits_per_byte_vs_base": heldout["bits_per_byte"]["vs"]["base"],
            "suite_seconds": {n: s.get("seconds") for n, s in evaluate["suites"].items()},
        }
    return {
        "value": totals["default"],
        "unit": "s",
        "ratio": round(totals["fp32"] / totals["default"], 2),
        "detail": {
            "config": config,
            "stage_seconds": seconds,
            "total_seconds": totals,
            "default_minus_fp32": quality,
            "runs": runs,
            "ratio_means": "fp32 / default seconds of synthesize + train + evaluate (higher is better)",
        },
    }
