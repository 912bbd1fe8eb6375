"""packing_efficiency: the share of batch slots that hold real tokens when training on the scraped data,
packed (whole examples best-fit into blocks, tasks/tokenization/packing.py) against padding mode (one
example per row, each batch padded to its longest row: TRL's collator).

Data, built here on every run (never a workspace's, which another profile may have written): the
installed scikit-learn scraped with the default profile's scrape settings, turned into docstring pairs as
the synthesize stage does (tasks/synthesize/docstring_pairs.py), tokenized by the tokenize stage's own
function with the SmolLM2 tokenizer (dequantized from its GGUF file as the base_model stage does) and the
default profile's settings (alpaca template, max_length 320, train batch 4). Batches are drawn in a
seeded random order, as the trainer samples them, and built by the collators training uses. Detail:
both modes at max_length 320, 512 and 1024, and the fixed max_length-slot view the tokenize report gives.

Run alone: `python -m benchmarks.run packing_efficiency`.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from benchmarks.registry import benchmark

MAX_LENGTH, BATCH, SEED = 320, 4, 0  # pipeline_config/offline.yaml: tokenize.max_length, train.batch_size


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
    seeded order; ratio = packed / padding mode. Its inputs are built here: the installed scikit-learn
    scraped, the SmolLM2 tokenizer from its GGUF file."""
    import sklearn

    from benchmarks.model_bench import PROFILE, stored_base_model
    from pipeline_config import load_config
    from tasks.common.io import write_jsonl
    from tasks.scrape.collect import scrape_sources
    from tasks.synthesize.docstring_pairs import docstring_pairs

    with tempfile.TemporaryDirectory() as tmp, stored_base_model() as model_dir:
        scraped = Path(tmp) / "scrape"
        scraped.mkdir()
        scrape_sources(scraped, load_config(PROFILE).scrape, Path(tmp))
        records = [json.loads(line) for line in (scraped / "records.jsonl").open()]
        pairs = list(docstring_pairs(records, None))
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
        "tokenizer": "SmolLM2-135M-Instruct (pipeline_config/offline.yaml model.source)",
        "records": f"scikit-learn {sklearn.__version__}, scraped with pipeline_config/offline.yaml: "
        f"{len(records)} records",
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
