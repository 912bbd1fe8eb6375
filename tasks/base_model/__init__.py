"""Stage base_model: the model every later stage starts from, resolved once and stored as a folder.

- `gguf`: a GGUF file inside an installed package (the default, SmolLM2-135M-Instruct), dequantized once
  and saved with save_pretrained (safetensors), so later stages load it in well under a second.
- `hub` / `folder`: used where they are; the key holds the resolved revision / the folder's content hash.
- `scratch`: a small model built from a config with a tokenizer trained on the scraped code.
- `model.miniature` (with any pretrained source): instead of the source, a tiny random model of
  `model.architecture` with a tokenizer trained on the scraped code (miniature.py); the source is not read.

Outputs (manifest): `model_dir` (absolute for hub/folder, inside this stage's folder otherwise), `kind`,
`card` (name, licence, parameters, origin: the registered model's description).

Run alone: `finetune run --config pipeline_config/offline.yaml --only base_model`.
"""

from __future__ import annotations

from tasks.base_model.miniature import build_miniature
from tasks.base_model.scratch import training_texts
from tasks.base_model.sources import SOURCE_KINDS, identity
from tasks.common.stage import StageResult, StageSpec


def run(cfg, inputs, out_dir, context) -> StageResult:
    source = cfg.model.source
    if cfg.model.miniature is not None:
        records = inputs["scrape"].file("records")
        texts, excluded = training_texts(records, cfg.split, cfg.seed, cfg.model.miniature.tokenizer_max_docs)
        card = build_miniature(texts, out_dir / "model", cfg.model, cfg.seed)
        report = {"rows_in": len(texts), "rows_out": 1, "held_out_records_excluded": excluded, **card}
        return StageResult(report, {"model_dir": "model", "kind": "miniature", "card": card})
    built = SOURCE_KINDS[source.kind].materialize(source, cfg, inputs, out_dir)
    card = built.card
    outputs = {"model_dir": built.model_dir, "kind": source.kind, "card": card, **built.outputs}
    if built.report is not None:  # built here from its config: its own report, no loaded config to check
        return StageResult(built.report, outputs)
    expected = cfg.model.architecture
    if expected and card.get("architecture") != expected:
        raise ValueError(
            f"model.architecture is {expected!r} but the model of model.source is a "
            f"{card.get('architecture')!r}: correct model.architecture (it decides the LoRA target check)"
        )
    card["identity"] = identity(source)  # the revision / content hash the key was made from
    report = {"rows_in": 0, "rows_out": 1, "kind": source.kind, **card}
    return StageResult(report, outputs)


def reads_scraped_code(cfg) -> bool:
    return SOURCE_KINDS[cfg.model.source.kind].reads_scraped_code or cfg.model.miniature is not None


def uses(cfg) -> tuple[str, ...]:
    return ("scrape",) if reads_scraped_code(cfg) else ()


def environment(cfg) -> dict:
    # a miniature never reads its source: the key must not depend on (or fail for) a hub model not here
    facts = {} if cfg.model.miniature is not None else identity(cfg.model.source)
    if reads_scraped_code(cfg):  # its tokenizer excludes the held-out sources
        return {**facts, "seed": cfg.seed, "split": cfg.split.model_dump()}
    return facts


SPEC = StageSpec(
    "base_model",
    run,
    "tasks.base_model",
    sections=("model",),
    libraries=("torch", "transformers", "tokenizers", "safetensors", "gguf"),
    environment=environment,
    uses=uses,
)
