"""packing_efficiency: the share of batch slots that hold real tokens when training on the scraped data,
packed (whole examples best-fit into blocks, tasks/tokenization/packing.py) against padding mode (one
example per row, each batch padded to its longest row: TRL's collator).

Data: the workspace's scrape stage output (records.jsonl) turned into docstring pairs as the synthesize
stage does (tasks/synthesize/docstring_pairs.py), tokenized by the tokenize stage's own function with the
SmolLM2 tokenizer from the workspace's base_model stage and the default profile's settings (alpaca template,
max_length 320, train batch 4). Batches are drawn in a seeded random order, as the trainer samples them,
and built by the collators training uses. Detail: both modes at max_length 320, 512 and 1024, and the fixed
max_length-slot view the tokenize report gives.

Needs a workspace from `make run` (or any run that reached base_model and scrape).
Run alone: `python -m benchmarks.run packing_efficiency`.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from benchmarks.registry import benchmark

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = ROOT / "workspace" / "stages"
MAX_LENGTH, BATCH, SEED = 320, 4, 0  # pipeline_config/offline.yaml: tokenize.max_length, train.batch_size


def newest(pattern: str) -> Path:
    found = sorted(WORKSPACE.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {pattern} under {WORKSPACE}: run the pipeline (make run) first")
    return found[-1]


def batch_fraction(rows: list[dict], collate, batch: int, seed: int) -> tuple[float, int]:
    """Real tokens over batch slots, over every batch of a seeded random order; and the batch count."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    real = slots = batches = 0
    for start in range(0, len(order), batch):
        members = [rows[i] for i in order[start : start + batch]]
        out = collate(members)
        real += sum(len(r["input_ids"]) for r in members)
        slots += out["input_ids"].numel()
        batches += 1
    return real / slots, batches


def measure(pairs_path: Path, model_dir: Path, max_length: int, work: Path) -> dict:
    from datasets import load_from_disk
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from pipeline_config.schema import SplitConfig, TokenizeConfig
    from tasks.common.models import load_tokenizer
    from tasks.tokenization.encode import tokenize_pairs
    from tasks.training.collate import PackedCollator

    split = SplitConfig(test_fraction=0.05, max_test_rows=64)
    result = {}
    for mode in ("padded", "packed"):
        cfg = TokenizeConfig(template="alpaca", max_length=max_length, packing=mode == "packed")
        out = work / f"{mode}-{max_length}"
        report = tokenize_pairs(pairs_path, out, str(model_dir), cfg, split, SEED)
        rows = load_from_disk(str(out / "dataset"))["train"].to_list()
        pad = load_tokenizer(model_dir).pad_token_id
        collate = (
            PackedCollator(pad) if mode == "packed" else DataCollatorForLanguageModeling(pad_token_id=pad)
        )
        fraction, batches = batch_fraction(rows, collate, BATCH, SEED)
        result[mode] = {
            "batch_fraction": round(fraction, 4),
            "slot_fraction": report["real_token_fraction"],  # every row a max_length slot
            "rows": report["train_rows"],
            "batches": batches,
            "examples": report["train_examples"],
            "tokens": report["train_tokens"],
            "truncated": report["truncated"],
        }
    packed = result["packed"]
    packed["examples_per_block"] = round(packed["examples"] / packed["rows"], 2)
    return result


@benchmark("packing_efficiency")
def packing_efficiency() -> dict:
    """Real-token fraction of packed training batches on the scraped data (SmolLM2 tokenizer, max_length
    320, batch 4; goal >= 0.95): real tokens / (rows x width) over every packed batch, drawn in the trainer's
    seeded order; ratio = packed / padding mode. Needs a workspace from `make run`."""
    from tasks.common.io import write_jsonl
    from tasks.synthesize.docstring_pairs import docstring_pairs

    records_path = newest("scrape/.v-*/records.jsonl")
    model_dir = newest("base_model/.v-*/model/config.json").parent
    records = [json.loads(line) for line in records_path.open()]
    pairs = list(docstring_pairs(records, None))
    with tempfile.TemporaryDirectory() as tmp:
        pairs_path = Path(tmp) / "pairs.jsonl"
        write_jsonl(pairs_path, pairs)
        sweep = {n: measure(pairs_path, model_dir, n, Path(tmp)) for n in (MAX_LENGTH, 512, 1024)}
    main = sweep[MAX_LENGTH]
    detail = {
        "packed_batch_fraction": main["packed"]["batch_fraction"],
        "padded_batch_fraction": main["padded"]["batch_fraction"],
        "packed_slot_fraction": main["packed"]["slot_fraction"],
        "padded_slot_fraction": main["padded"]["slot_fraction"],
        "max_length": MAX_LENGTH,
        "batch_size": BATCH,
        "pairs": len(pairs),
        "train_examples": main["packed"]["examples"],
        "packed_rows": main["packed"]["rows"],
        "examples_per_block": main["packed"]["examples_per_block"],
        "batches_packed_vs_padded": f"{main['packed']['batches']} vs {main['padded']['batches']}",
        "truncated": main["packed"]["truncated"],
        "tokenizer": str(model_dir.relative_to(ROOT)),
        "records": str(records_path.relative_to(ROOT)),
        "sweep": {
            n: {m: {k: r[m][k] for k in ("batch_fraction", "slot_fraction", "rows", "truncated")} for m in r}
            for n, r in sweep.items()
        },
        "goal": ">= 0.95",
        "ratio_means": "packed / padded real-token fraction of batches (higher is better)",
    }
    value = main["packed"]["batch_fraction"]
    return {
        "value": value,
        "unit": "real-token fraction",
        "ratio": round(value / main["padded"]["batch_fraction"], 2),
        "detail": detail,
    }
