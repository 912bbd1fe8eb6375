"""Fill-in-the-Middle (tasks/tokenization/fim.py and its use in tokenize and train): PSM/SPM golden strings,
fim_transform's seeded cut, AST middles that are exactly a node's source, template text never in a FIM span,
sentinels added to a tokenizer that lacks them, and a tiny model trained with them under LoRA."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import (
    PYTHON_CORPUS,
    TEMPLATE_TEXT,
    TINY_SCRATCH,
    ids,
    make_pairs,
    tokenized_dataset,
    write_pairs,
)

from pipeline_config import load_config
from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.base_model.scratch import EOS
from tasks.common.templates import TEMPLATE_FILE, format_prompt
from tasks.tokenization.encode import IGNORE, TOKENIZER_DIR, tokenize_pairs
from tasks.tokenization.fim import (
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    FIM_TOKENS,
    add_fim_tokens,
    ast_spans,
    fim_cut,
    fim_transform,
)
from tests.conftest import REPO

CODE = "def square(x):\n    return x * x\n"
# non-ASCII text before nodes: ast's columns are UTF-8 bytes, the spans are characters
RICH = '''def mean(values, label="µ"):
    """Mean — or an error."""
    if not values:
        raise ValueError(f"empty {label} ünput")
    total = 0
    for v in values:
        total += v * 2  # doublé
    else:
        total = total / 2
    try:
        return total / len(values)
    except ZeroDivisionError:
        return None
'''


def split_fim(text: str) -> tuple[str, str, str, str]:
    """(order, prefix, middle, suffix) of a FIM string."""
    assert text.startswith(FIM_PREFIX) and all(text.count(t) == 1 for t in FIM_TOKENS)
    if text.startswith(FIM_PREFIX + FIM_SUFFIX):  # SPM: suffix, then prefix + middle
        suffix, rest = text[len(FIM_PREFIX + FIM_SUFFIX) :].split(FIM_MIDDLE)
        return "spm", rest, "", suffix  # prefix and middle are told apart by the caller
    prefix, rest = text[len(FIM_PREFIX) :].split(FIM_SUFFIX)
    suffix, middle = rest.split(FIM_MIDDLE)
    return "psm", prefix, middle, suffix


# --------------------------------------------------------------------------------------------------------
# Golden strings (seeded)
# --------------------------------------------------------------------------------------------------------


def test_psm_golden_random_middle() -> None:
    cut = fim_cut(CODE, random.Random(0), spm_rate=0.0, ast_rate=0.0)
    assert (cut.order, cut.middle) == ("psm", "random")
    assert cut.text == "<fim_prefix>def square(x)<fim_suffix>* x\n<fim_middle>:\n    return x "


def test_spm_golden_random_middle() -> None:
    cut = fim_cut(CODE, random.Random(0), spm_rate=1.0, ast_rate=0.0)
    assert (cut.order, cut.middle) == ("spm", "random")
    # the same cut as the PSM golden above, in StarCoder's SPM order
    assert cut.text == "<fim_prefix><fim_suffix>* x\n<fim_middle>def square(x):\n    return x "


def test_psm_and_spm_golden_ast_middle() -> None:
    psm = fim_cut(CODE, random.Random(3), spm_rate=0.0, ast_rate=1.0)
    assert (psm.order, psm.middle) == ("psm", "statement")
    assert psm.text == "<fim_prefix>def square(x):\n    <fim_suffix>\n<fim_middle>return x * x"
    spm = fim_cut(CODE, random.Random(3), spm_rate=1.0, ast_rate=1.0)
    assert spm.text == "<fim_prefix><fim_suffix>\n<fim_middle>def square(x):\n    return x * x"


@pytest.mark.parametrize("seed", range(20))
def test_fim_reassembles_the_code_and_is_seeded(seed: int) -> None:
    cut = fim_cut(RICH, random.Random(seed), spm_rate=0.5, ast_rate=0.5)
    order, first, middle, suffix = split_fim(cut.text)
    assert order == cut.order
    if order == "psm":
        assert first and middle and suffix or cut.middle != "random"
        assert first + middle + suffix == RICH
    else:
        assert first + suffix == RICH  # prefix + middle, then the suffix
    assert fim_cut(RICH, random.Random(seed), 0.5, 0.5) == cut


def test_rates_select_orders_and_middles() -> None:
    cuts = [fim_cut(RICH, random.Random(s), spm_rate=0.3, ast_rate=0.6) for s in range(400)]
    spm = sum(c.order == "spm" for c in cuts) / len(cuts)
    at_ast = sum(c.middle != "random" for c in cuts) / len(cuts)
    assert 0.22 < spm < 0.38 and 0.52 < at_ast < 0.68
    assert {c.middle for c in cuts} == {"random", "statement", "body", "expression"}


def test_short_code_is_not_cut() -> None:
    assert fim_cut("ab", random.Random(0)) is None


@pytest.mark.parametrize("seed", range(8))
def test_fim_psm_order_and_reassembly(seed: int) -> None:
    out = fim_transform(CODE, random.Random(seed))
    for token in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE):
        assert out.count(token) == 1
    assert out.startswith(FIM_PREFIX)
    assert out.index(FIM_PREFIX) < out.index(FIM_SUFFIX) < out.index(FIM_MIDDLE)
    prefix, rest = out[len(FIM_PREFIX) :].split(FIM_SUFFIX)
    suffix, middle = rest.split(FIM_MIDDLE)
    assert prefix and middle and suffix  # two distinct inner cut points
    assert prefix + middle + suffix == CODE
    assert fim_transform(CODE, random.Random(seed)) == out  # seeded


def test_fim_short_text_unchanged() -> None:
    assert fim_transform("ab", random.Random(0)) == "ab"


# --------------------------------------------------------------------------------------------------------
# AST middles
# --------------------------------------------------------------------------------------------------------


def node_sources(code: str) -> dict[str, set[str]]:
    """The reference: ast.get_source_segment of every statement, expression and block body."""
    tree = ast.parse(code)
    out: dict[str, set[str]] = {"statement": set(), "expression": set(), "body": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            out["statement"].add(ast.get_source_segment(code, node))
        if isinstance(node, ast.expr):
            out["expression"].add(ast.get_source_segment(code, node))
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                span = SimpleNamespace(
                    lineno=block[0].lineno,
                    col_offset=block[0].col_offset,
                    end_lineno=block[-1].end_lineno,
                    end_col_offset=block[-1].end_col_offset,
                )
                out["body"].add(ast.get_source_segment(code, span))
    return out


def test_ast_spans_are_exactly_node_sources() -> None:
    reference = node_sources(RICH)
    spans = ast_spans(RICH)
    assert set(spans) == {"statement", "body", "expression"}
    for kind, found in spans.items():
        texts = {RICH[a:b] for a, b in found}
        assert texts <= reference[kind], kind
    # every node but the whole function is a candidate (it would leave nothing around the middle)
    assert {RICH[a:b] for a, b in spans["statement"]} == reference["statement"] - {RICH.rstrip("\n")}
    assert 'raise ValueError(f"empty {label} ünput")' in {RICH[a:b] for a, b in spans["statement"]}
    assert "total = total / 2" in {RICH[a:b] for a, b in spans["body"]}  # the for loop's else body


@pytest.mark.parametrize("seed", range(30))
def test_ast_middle_is_the_source_of_a_node(seed: int) -> None:
    cut = fim_cut(RICH, random.Random(seed), spm_rate=0.0, ast_rate=1.0)
    _, prefix, middle, suffix = split_fim(cut.text)
    assert cut.middle in {"statement", "body", "expression"}
    assert middle in node_sources(RICH)[cut.middle]
    assert prefix + middle + suffix == RICH


def test_unparseable_code_falls_back_to_a_random_middle() -> None:
    broken = "def f(x:\n    return (x +\n"
    assert ast_spans(broken) == {}
    cut = fim_cut(broken, random.Random(0), spm_rate=0.0, ast_rate=1.0)
    assert cut.middle == "random"
    _, prefix, middle, suffix = split_fim(cut.text)
    assert prefix + middle + suffix == broken


# --------------------------------------------------------------------------------------------------------
# Tokenizer without FIM tokens; the tokenize stage's FIM rows
# --------------------------------------------------------------------------------------------------------


def tokenizer_without_fim(folder: Path) -> Path:
    """A byte-level BPE tokenizer like the scratch one, minus the FIM sentinels, and a tiny llama for it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tasks.base_model.scratch import EOS, PAD, build_model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_SCRATCH.vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([PYTHON_CORPUS, TEMPLATE_TEXT] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    model = build_model(TINY_SCRATCH, len(fast), fast.eos_token_id, fast.pad_token_id, seed=0)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def no_fim_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tokenizer_without_fim(tmp_path_factory.mktemp("no_fim_model"))


@pytest.fixture(scope="module")
def fim_tokenized(tmp_path_factory: pytest.TempPathFactory, no_fim_model: Path) -> tuple[Path, dict]:
    pairs_dir = write_pairs(tmp_path_factory.mktemp("pairs"), make_pairs(24))
    out = tmp_path_factory.mktemp("fim_tokenized")
    cfg = TokenizeConfig(max_length=256, fim_rate=1.0, fim_spm_rate=0.5, fim_ast_rate=0.5)
    report = tokenize_pairs(
        pairs_dir / "pairs.jsonl", out, str(no_fim_model), cfg, SplitConfig(test_fraction=0.25), 0
    )
    return out, report


def test_add_fim_tokens_only_adds_missing(no_fim_model: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(no_fim_model)
    size = len(bare)
    assert add_fim_tokens(bare) == list(FIM_TOKENS) and len(bare) == size + 3
    assert bare.tokenize(f"{FIM_PREFIX}x{FIM_MIDDLE}") == [FIM_PREFIX, "x", FIM_MIDDLE]  # never split
    assert add_fim_tokens(bare) == []  # idempotent
    assert add_fim_tokens(AutoTokenizer.from_pretrained(tiny_model_dir)) == []  # the scratch one has them


def test_tokenize_adds_fim_tokens_and_saves_the_tokenizer(fim_tokenized, no_fim_model: Path) -> None:
    from transformers import AutoTokenizer

    out, report = fim_tokenized
    assert report["fim"]["tokens_added"] == list(FIM_TOKENS)
    saved = AutoTokenizer.from_pretrained(out / "dataset" / TOKENIZER_DIR)
    assert len(saved) == len(AutoTokenizer.from_pretrained(no_fim_model)) + 3
    assert all(t in saved.get_vocab() for t in FIM_TOKENS)


def test_fim_rows_cut_the_code_only_never_the_template(fim_tokenized) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    out, report = fim_tokenized
    tokenizer = AutoTokenizer.from_pretrained(out / "dataset" / TOKENIZER_DIR)
    splits = load_from_disk(str(out / "dataset"))
    pairs = {p["id"]: p for p in make_pairs(24)}
    sentinel_ids = {tokenizer.convert_tokens_to_ids(t) for t in FIM_TOKENS}
    assert report["fim"]["rows"] == len(splits["train"]) > 0  # fim_rate 1: every train row
    assert (
        0 < report["fim"]["spm"] < report["fim"]["rows"] and 0 < report["fim"]["ast"] < report["fim"]["rows"]
    )
    for row in splits["train"]:
        src = pairs[row["id"]]
        prompt = format_prompt("alpaca", src["instruction"], src["input"])
        assert row["prompt"] == prompt
        text = tokenizer.decode(row["input_ids"])
        head, fim_text = text.split(FIM_PREFIX, 1)
        assert head == prompt  # the template is whole, before every FIM span
        assert fim_text.endswith(tokenizer.eos_token)
        order, first, middle, suffix = split_fim(FIM_PREFIX + fim_text[: -len(tokenizer.eos_token)])
        code = first + middle + suffix if order == "psm" else first + suffix
        assert code == src["output"]  # the spans hold the response's code and nothing else
        assert "### Response" not in FIM_PREFIX + fim_text and "Below is an instruction" not in fim_text
        # each sentinel is one token, and the prompt is masked as in any other row
        assert sum(t in sentinel_ids for t in row["input_ids"]) == 3
        n_prompt = row["input_ids"].index(tokenizer.convert_tokens_to_ids(FIM_PREFIX))
        assert row["labels"][:n_prompt] == [-100] * n_prompt
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    for row in splits["test"]:  # evaluation rows are never cut
        assert not sentinel_ids & set(row["input_ids"])


def test_tokenize_pairs_fim_rows_keep_the_prompt_and_cut_the_code(
    tmp_path_factory,
    tiny_model_dir: Path,
    tiny_tokenizer,
) -> None:
    from datasets import load_from_disk

    cfg = TokenizeConfig(max_length=256, fim_rate=1.0)
    out, report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 20, cfg, seed=0)
    splits = load_from_disk(str(out / "dataset"))
    fim_ids = {tiny_tokenizer.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)}
    assert report["fim"]["rows"] == len(splits["train"]) and report["fim"]["tokens_added"] == []
    for row in splits["train"]:
        assert row["prompt"].startswith("Below is an instruction")  # the template is never cut
        n = len(ids(tiny_tokenizer, row["prompt"]))
        assert row["input_ids"][:n] == ids(tiny_tokenizer, row["prompt"]) and row["input_ids"][n] in fim_ids
        assert row["labels"][:n] == [IGNORE] * n and row["labels"][n:] == row["input_ids"][n:]
        assert fim_ids <= set(row["input_ids"])
    for row in splits["test"]:  # evaluation rows keep the plain prompt
        assert row["prompt"].startswith("Below is an instruction")
        assert not fim_ids & set(row["input_ids"])


def test_tokenize_pairs_adds_missing_fim_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        [CODE],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=[EOS, "<|pad|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token="<|pad|>").save_pretrained(
        tmp_path / "tok"
    )
    pairs_dir = write_pairs(tmp_path / "pairs", make_pairs(4))
    from transformers import AutoTokenizer

    report = tokenize_pairs(
        pairs_dir / "pairs.jsonl",
        tmp_path / "out",
        str(tmp_path / "tok"),
        TokenizeConfig(fim_rate=0.5),
        SplitConfig(test_fraction=0.5),
        0,
    )
    assert report["fim"]["tokens_added"] == [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "dataset" / TOKENIZER_DIR)
    assert len(saved) == len(AutoTokenizer.from_pretrained(tmp_path / "tok")) + 3
    # without FIM the same tokenizer is kept as it is
    split = SplitConfig(test_fraction=0.5)
    report = tokenize_pairs(
        pairs_dir / "pairs.jsonl", tmp_path / "out2", str(tmp_path / "tok"), TokenizeConfig(), split, 0
    )
    assert report["train_rows"] + report["test_rows"] == 4 and report["test_rows"] >= 1
    assert report["fim"]["tokens_added"] == []


@pytest.mark.slow
def test_tiny_model_trains_with_added_fim_tokens_under_lora(
    fim_tokenized, no_fim_model: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from tasks.training.job import TrainJob
    from tasks.training.recipe import train_model

    out, _ = fim_tokenized
    # the tiny profile's recipe (LoRA r=4, alpha 8, no dropout, batch 4) on the CPU, with a learning rate
    # that moves 12 steps
    tiny = load_config(REPO / "pipeline_config" / "tiny.yaml").train
    lora = tiny.lora
    assert (tiny.method, lora.r, lora.alpha, lora.dropout, tiny.batch_size) == ("lora", 4, 8, 0.0, 4)
    fast = {"device": "cpu", "learning_rate": 1e-2, "max_steps": 12, "logging_steps": 4, "warmup_ratio": 0.0}
    cfg = tiny.model_copy(update=fast)
    job = TrainJob(
        dataset_dir=out / "dataset",
        out_dir=tmp_path,
        model_path=no_fim_model,
        template_file=out / TEMPLATE_FILE,
        cfg=cfg,
        seed=0,
    )
    report = train_model(job)
    losses = [h["loss"] for h in json.loads((tmp_path / "log_history.json").read_text()) if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0]
    base_vocab = len(AutoTokenizer.from_pretrained(no_fim_model))
    saved = load_file(tmp_path / "model" / "adapter_model.safetensors")
    embeddings = [t for name, t in saved.items() if "embed_tokens" in name]
    assert embeddings and embeddings[0].shape[0] == base_vocab + 3  # modules_to_save: the grown embedding
    base = load_file(no_fim_model / "model.safetensors")["model.embed_tokens.weight"]
    assert not embeddings[0][:base_vocab].equal(base)  # the embedding itself was trained
    adapter_cfg = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert "embed_tokens" in adapter_cfg["modules_to_save"]
    tuned_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert all(t in tuned_tokenizer.get_vocab() for t in FIM_TOKENS)
    assert report["trainable_parameters"] > embeddings[0].numel()
