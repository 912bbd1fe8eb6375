"""What the local teacher keeps: the synthesize stage's generators (Self-Instruct, OSS-Instruct) with a
profile's settings and its real teacher, on the base model and scraped records a `make run` left in the
workspace. Prints the report of each mode (prompts, unparseable, every filter's rejections, verification
pass rate and failure kinds, kept) and the seconds taken. Not a test, not part of `make bench`.

    python -m benchmarks.synth_keep_rate [pipeline_config/offline.yaml] [seed ...]

The base model folder and records are the newest `base_model` and `scrape` stage folders of the workspace
($FINETUNE_WORKSPACE or ./workspace); run `make run` (or `finetune run --only scrape base_model`) first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipeline_config.loader import load_config
from tasks.common.io import iter_jsonl, workspace_path
from tasks.common.teacher import make_teacher
from tasks.synthesize.oss_instruct import oss_instruct
from tasks.synthesize.pairs import mode_report
from tasks.synthesize.self_instruct import self_instruct


def newest(stages: Path, stage: str, inside: str) -> Path:
    found = sorted((stages / stage).glob(f".v-*/{inside}"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no {stage} stage output with {inside} under {stages}: run the pipeline first")
    return found[-1]


def main(argv: list[str]) -> None:
    config = argv[0] if argv else "pipeline_config/offline.yaml"
    seeds = [int(s) for s in argv[1:]] or [0]
    cfg = load_config(config)
    stages = workspace_path(cfg) / "stages"
    model_dir = newest(stages, "base_model", "model")
    records = list(iter_jsonl(newest(stages, "scrape", "records.jsonl")))
    s = cfg.synthesize
    for seed in seeds:
        start = time.perf_counter()
        teacher = make_teacher(s.teacher, str(model_dir), seed)
        out: dict = {"config": config, "seed": seed, "load_s": round(time.perf_counter() - start, 1)}
        if s.self_instruct.enabled:
            t = time.perf_counter()
            _, counts, filtered = self_instruct(teacher, s.self_instruct, s.verify, seed)
            out["self_instruct"] = mode_report(counts, filtered, s) | {
                "seconds": round(time.perf_counter() - t)
            }
        if s.oss_instruct.enabled:
            t = time.perf_counter()
            _, counts, filtered = oss_instruct(teacher, records, s.oss_instruct, s.verify, seed)
            out["oss_instruct"] = mode_report(counts, filtered, s) | {
                "seconds": round(time.perf_counter() - t)
            }
        out["total_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
