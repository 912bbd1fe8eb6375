"""Conversations (tasks/common/chat.py rendering, tasks/tokenization/conversation.py encoding, and their
use in tokenize_pairs), with the tiny scratch tokenizer given a ChatML template: golden label spans of a
multi-turn conversation with a system turn, a single turn encoding exactly as its pair (chat and alpaca),
truncation that keeps whole exchanges, the pair fallback and the drop policy, the generation form, one BOS,
a template that rewrites history refused, malformed `messages` named, and one tokenize run mixing plain
and conversation rows with its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import PYTHON_CORPUS, TEMPLATE_TEXT, ids, make_pairs, write_pairs

from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.base_model.scratch import EOS, PAD, train_tokenizer
from tasks.common.chat import (
    Exchange,
    conversation_problem,
    conversation_segments,
    generation_form,
    render_conversation,
)
from tasks.common.splits import split_rows
from tasks.common.templates import resolve_template
from tasks.tokenization.conversation import encode_exchanges
from tasks.tokenization.encode import IGNORE, encode_pair, tokenize_pairs
from tasks.tokenization.fim import FIM_MIDDLE

# ChatML without a default system turn (SmolLM2's writes one when the conversation has none)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END = "<|im_end|>\n"
SQUARE, ADD, MEAN = (
    "def square(x):\n    return x * x\n",
    "def add(a, b):\n    return a + b\n",
    "def mean(values):\n    return sum(values) / len(values)\n",
)
MESSAGES = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "Write a function `square`."},
    {"role": "assistant", "content": SQUARE},
    {"role": "user", "content": "Now `add`."},
    {"role": "assistant", "content": ADD},
    {"role": "user", "content": "And `mean`."},
    {"role": "assistant", "content": MEAN},
]


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """The tiny tokenizer saved with a ChatML template: what a tokenize run with template chat loads."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHATML
    out = tmp_path_factory.mktemp("chat_tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_tokenizer(chat_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chat_model_dir)


def labelled_spans(row: dict) -> list[list[int]]:
    """The runs of labelled token ids, in order."""
    spans, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label == IGNORE:
            if current:
                spans.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return [*spans, current] if current else spans


def unlabelled_text(tokenizer, row: dict) -> str:
    return tokenizer.decode(
        [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE]
    )


def test_multi_turn_chat_labels_exactly_the_assistant_turns(chat_tokenizer) -> None:
    template = resolve_template("chat", chat_tokenizer)
    exchanges = render_conversation(MESSAGES, template, chat_tokenizer, "conv-1")
    assert exchanges == [
        Exchange(
            "<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\nWrite a function `square`."
            "<|im_end|>\n<|im_start|>assistant\n",
            SQUARE,
            END,
        ),
        Exchange("<|im_start|>user\nNow `add`.<|im_end|>\n<|im_start|>assistant\n", ADD, END),
        Exchange("<|im_start|>user\nAnd `mean`.<|im_end|>\n<|im_start|>assistant\n", MEAN, END),
    ]
    # the segments are the template's own rendering of the whole conversation
    text = "".join(s.text for s in conversation_segments(exchanges))
    assert text == chat_tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert [s.trained for s in conversation_segments(exchanges)] == [False, True, True] * 3

    row, truncated, kept = encode_exchanges(chat_tokenizer, exchanges, TokenizeConfig(max_length=512))
    assert (truncated, kept) == (False, 3)
    spans = labelled_spans(row)
    assert [chat_tokenizer.decode(s) for s in spans] == [SQUARE + END, ADD + END, MEAN + EOS]
    assert spans[-1] == ids(chat_tokenizer, MEAN) + [chat_tokenizer.eos_token_id]
    assert unlabelled_text(chat_tokenizer, row) == "".join(e.prompt for e in exchanges)
    assert "You write Python." in unlabelled_text(chat_tokenizer, row)
    assert row["attention_mask"] == [1] * len(row["input_ids"])

    unmasked, _, _ = encode_exchanges(
        chat_tokenizer, exchanges, TokenizeConfig(max_length=512, mask_prompt=False)
    )
    assert unmasked["labels"] == unmasked["input_ids"] == row["input_ids"]


def test_multi_turn_alpaca_exchanges_follow_each_other(tiny_tokenizer) -> None:
    template = resolve_template("alpaca", tiny_tokenizer)
    exchanges = render_conversation(MESSAGES, template, tiny_tokenizer, "conv-1")
    assert [e.prompt for e in exchanges] == [
        template.format("You write Python.\n\nWrite a function `square`."),
        "\n" + template.format("Now `add`."),
        "\n" + template.format("And `mean`."),
    ]
    assert [(e.answer, e.end) for e in exchanges] == [(SQUARE, ""), (ADD, ""), (MEAN, "")]
    row, _, _ = encode_exchanges(tiny_tokenizer, exchanges, TokenizeConfig(max_length=512))
    assert [tiny_tokenizer.decode(s) for s in labelled_spans(row)] == [SQUARE, ADD, MEAN + EOS]
    assert unlabelled_text(tiny_tokenizer, row) == "".join(e.prompt for e in exchanges)


@pytest.mark.parametrize("name", ["chat", "alpaca"])
@pytest.mark.parametrize(
    "cfg",
    [
        TokenizeConfig(max_length=512),
        TokenizeConfig(max_length=512, mask_prompt=False),
        TokenizeConfig(max_length=20),  # over-long: the pair's own left truncation
        TokenizeConfig(max_length=40, truncation_side="right"),
        TokenizeConfig(max_length=20, overlong="drop"),
    ],
    ids=["fits", "unmasked", "left_cut", "right_cut", "drop"],
)
def test_a_single_turn_encodes_exactly_as_its_pair(chat_tokenizer, name: str, cfg: TokenizeConfig) -> None:
    instruction = "Write a Python function `square`."
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": SQUARE}]
    template = resolve_template(name, chat_tokenizer)
    row, truncated, _ = encode_exchanges(
        chat_tokenizer, render_conversation(messages, template, chat_tokenizer, "one"), cfg
    )
    assert (row, truncated) == encode_pair(chat_tokenizer, template.format(instruction), SQUARE, cfg)
    assert generation_form(messages, template, chat_tokenizer) == (template.format(instruction), SQUARE)


def exchange_lengths(tokenizer, exchanges: list[Exchange]) -> list[tuple[int, int, int]]:
    return [
        (len(ids(tokenizer, e.prompt)), len(ids(tokenizer, e.answer)), len(ids(tokenizer, e.end)))
        for e in exchanges
    ]


def test_truncation_keeps_whole_exchanges_from_the_start(chat_tokenizer) -> None:
    exchanges = render_conversation(MESSAGES, resolve_template("chat", chat_tokenizer), chat_tokenizer, "c")
    (p0, a0, e0), (p1, a1, e1), (p2, a2, _) = exchange_lengths(chat_tokenizer, exchanges)
    two = p0 + a0 + e0 + p1 + a1 + 1  # two exchanges, the second ending with eos
    three = two - 1 + e1 + p2 + a2 + 1
    assert encode_exchanges(chat_tokenizer, exchanges, TokenizeConfig(max_length=three))[1:] == (False, 3)
    for max_length in (two, three - 1):  # an exact fit, and one token short of the third
        row, truncated, kept = encode_exchanges(
            chat_tokenizer, exchanges, TokenizeConfig(max_length=max_length)
        )
        assert (truncated, kept, len(row["input_ids"])) == (True, 2, two)
        assert [chat_tokenizer.decode(s) for s in labelled_spans(row)] == [SQUARE + END, ADD + EOS]
    row, truncated, kept = encode_exchanges(chat_tokenizer, exchanges, TokenizeConfig(max_length=two - 1))
    assert (truncated, kept) == (True, 1)
    assert [chat_tokenizer.decode(s) for s in labelled_spans(row)] == [SQUARE + EOS]


@pytest.mark.parametrize("side", ["left", "right"])
def test_an_overlong_first_exchange_is_encoded_as_its_pair(chat_tokenizer, side: str) -> None:
    exchanges = render_conversation(MESSAGES, resolve_template("chat", chat_tokenizer), chat_tokenizer, "c")
    (p0, a0, _), *_ = exchange_lengths(chat_tokenizer, exchanges)
    cfg = TokenizeConfig(max_length=p0 + a0, truncation_side=side)  # one short: the eos does not fit
    row, truncated, kept = encode_exchanges(chat_tokenizer, exchanges, cfg)
    assert (row, truncated) == encode_pair(chat_tokenizer, exchanges[0].prompt, SQUARE, cfg)
    assert kept == 1 and truncated and len(row["input_ids"]) == p0 + a0
    assert ADD not in chat_tokenizer.decode(row["input_ids"])


def test_drop_policy_drops_a_conversation_that_does_not_fit_whole(chat_tokenizer) -> None:
    exchanges = render_conversation(MESSAGES, resolve_template("chat", chat_tokenizer), chat_tokenizer, "c")
    whole = (
        sum(p + a + e for p, a, e in exchange_lengths(chat_tokenizer, exchanges))
        - len(ids(chat_tokenizer, END))
        + 1
    )
    row, truncated, kept = encode_exchanges(
        chat_tokenizer, exchanges, TokenizeConfig(max_length=whole, overlong="drop")
    )
    assert (truncated, kept, len(row["input_ids"])) == (False, 3, whole)  # an exact fit stays
    row, truncated, kept = encode_exchanges(
        chat_tokenizer, exchanges, TokenizeConfig(max_length=whole - 1, overlong="drop")
    )
    assert (row, truncated, kept) == (None, True, 0)


def test_generation_form_is_the_conversation_before_its_last_answer(chat_tokenizer) -> None:
    chat = resolve_template("chat", chat_tokenizer)
    prompt, answer = generation_form(MESSAGES, chat, chat_tokenizer, "c")
    assert answer == MEAN
    assert prompt == chat_tokenizer.apply_chat_template(
        MESSAGES[:-1], tokenize=False, add_generation_prompt=True
    )
    # a conversation that ends on a user turn: the prompt to answer it
    assert generation_form(MESSAGES[:-1], chat, chat_tokenizer, "c") == (prompt, "")
    alpaca = resolve_template("alpaca", chat_tokenizer)
    prompt, answer = generation_form(MESSAGES, alpaca, chat_tokenizer, "c")
    assert (prompt, answer) == (
        alpaca.format("You write Python.\n\nWrite a function `square`.")
        + SQUARE
        + "\n"
        + alpaca.format("Now `add`.")
        + ADD
        + "\n"
        + alpaca.format("And `mean`."),
        MEAN,
    )


def test_one_bos_starts_a_conversation_as_resolve_template_writes_it() -> None:
    from tokenizers import processors

    specials = {"eos_token": EOS, "pad_token": PAD, "bos_token": "<s>"}
    tokenizer = train_tokenizer([PYTHON_CORPUS, TEMPLATE_TEXT], 400, specials, extra=())
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = CHATML
    for name in ("chat", "alpaca"):
        template = resolve_template(name, tokenizer)
        assert template.format("x").startswith("<s>")
        exchanges = render_conversation(MESSAGES, template, tokenizer, "c")
        text = "".join(s.text for s in conversation_segments(exchanges))
        assert text.startswith("<s>") and text.count("<s>") == 1
        single = render_conversation(MESSAGES[1:3], template, tokenizer, "c")
        assert single[0].prompt == template.format(MESSAGES[1]["content"])


def test_a_template_that_rewrites_history_or_refuses_a_turn_is_named(chat_tokenizer) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_tokenizer.name_or_path)
    # earlier answers hidden (as templates that drop the reasoning of earlier turns do)
    tokenizer.chat_template = CHATML.replace(
        "{{ m['content'] }}", "{{ m['content'] if loop.last or m['role'] != 'assistant' else '(answered)' }}"
    )
    template = resolve_template("chat", tokenizer)
    with pytest.raises(
        ValueError, match=r"the tokenizer '.*' does not render row 'conv-9' prefix-consistently"
    ):
        render_conversation(MESSAGES, template, tokenizer, "conv-9")
    tokenizer.chat_template = (
        "{{ raise_exception('no system turn') if messages[0]['role'] == 'system' }}" + CHATML
    )
    with pytest.raises(ValueError, match=r"cannot render row 'conv-9': no system turn"):
        render_conversation(MESSAGES, resolve_template("chat", tokenizer), tokenizer, "conv-9")
    tokenizer.chat_template = CHATML.replace(
        "{{ m['content'] }}", "{{ m['content'] if loop.last or m['role'] != 'assistant' else '(answered)' }}"
    )
    # a single turn has no history to rewrite
    assert render_conversation(MESSAGES[1:3], template, tokenizer, "one")[0].prompt == template.format(
        MESSAGES[1]["content"]
    )


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ("hello", "is a str, not a list of turns"),
        ([], "does not end with an assistant turn"),
        ([{"role": "user", "content": "x"}], "does not end with an assistant turn"),
        ([{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}], "turn 2 has role 'bot'"),
        (
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}],
            "turn 2 (assistant) has no content",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "y"},
            ],
            "turn 2 is a system turn where an assistant turn belongs",
        ),
        ([{"role": "assistant", "content": "y"}], "turn 1 is an assistant turn where a user turn belongs"),
    ],
)
def test_a_malformed_conversation_is_named(tmp_path: Path, tiny_model_dir: Path, messages, problem) -> None:
    assert problem in conversation_problem(messages)
    rows = make_pairs(6)
    rows[3]["messages"] = messages
    pairs = write_pairs(tmp_path, rows) / "pairs.jsonl"
    with pytest.raises(ValueError) as caught:
        tokenize_pairs(pairs, tmp_path, str(tiny_model_dir), TokenizeConfig(), SplitConfig(), 0)
    message = str(caught.value)
    assert f"line 4 of {pairs} (id 'pair-003'): 'messages' {problem}" in message
    assert not (tmp_path / "dataset").exists()


def conversation_rows(n: int) -> list[dict]:
    """n conversation rows in the schema (instruction: first user turn, output: last answer), the even
    ones with a system turn and three exchanges, the odd ones a single exchange; each its own source."""
    rows = []
    for i in range(n):
        last = f"{MEAN}# conversation {i}\n"
        messages = (
            [*MESSAGES[:-1], {"role": "assistant", "content": last}]
            if i % 2 == 0
            else [MESSAGES[1], {"role": "assistant", "content": last}]
        )
        rows.append(
            {
                "id": f"conv-{i:03d}",
                "instruction": MESSAGES[1]["content"],
                "input": "",
                "output": last,
                "source": "chat_set",
                "metadata": {},
                "messages": messages,
            }
        )
    return rows


@pytest.mark.parametrize("name", ["chat", "alpaca"])
def test_tokenize_pairs_mixes_plain_and_conversation_rows(
    tmp_path: Path, chat_model_dir: Path, chat_tokenizer, name: str
) -> None:
    from datasets import load_from_disk

    plain, chats = make_pairs(12), conversation_rows(12)
    rows = [r for pair in zip(plain, chats, strict=True) for r in pair]
    split, seed = SplitConfig(test_fraction=0.3), 0
    cfg = TokenizeConfig(template=name, max_length=512)
    train_idx, test_idx, _ = split_rows(rows, split, seed)
    is_chat = [bool(r.get("messages")) for r in rows]
    # the case under test: conversations (single and multi-turn) on both sides, plain rows too
    assert {is_chat[i] for i in train_idx} == {is_chat[i] for i in test_idx} == {True, False}
    assert {len(rows[i].get("messages", [])) for i in train_idx} == {0, 2, 7}
    pairs = write_pairs(tmp_path / "in", rows) / "pairs.jsonl"
    report = tokenize_pairs(pairs, tmp_path / "out", str(chat_model_dir), cfg, split, seed)
    splits = load_from_disk(str(tmp_path / "out" / "dataset"))
    template = resolve_template(name, chat_tokenizer)

    for side, idx in (("train", train_idx), ("test", test_idx)):
        for i, got in zip(idx, splits[side].to_list(), strict=True):
            src = rows[i]
            assert got["id"] == src["id"]
            if not is_chat[i]:  # a plain row: as before
                prompt = template.format(src["instruction"], src["input"])
                row, _ = encode_pair(chat_tokenizer, prompt, src["output"], cfg)
            elif side == "train":
                row, _, _ = encode_exchanges(
                    chat_tokenizer, render_conversation(src["messages"], template, chat_tokenizer), cfg
                )
                prompt = generation_form(src["messages"], template, chat_tokenizer)[0]
            else:  # held out: the generation form, as any evaluation row
                prompt = generation_form(src["messages"], template, chat_tokenizer)[0]
                row, _ = encode_pair(chat_tokenizer, prompt, src["output"], cfg)
            assert {k: got[k] for k in row} == row
            assert (got["prompt"], got["response"], got["input"]) == (prompt, src["output"], src["input"])

    train_chats = [i for i in train_idx if is_chat[i]]
    multi = [i for i in train_idx + test_idx if is_chat[i] and len(rows[i]["messages"]) > 2]
    assert report["conversations"] == {
        "rows": sum(is_chat[i] for i in train_idx + test_idx),
        "multi_turn": len(multi),
        "assistant_turns_trained": sum(len(rows[i]["messages"]) // 2 for i in train_chats),
        "turns_dropped_by_truncation": 0,
    }
    assert report["by_source"] == {
        "chat_set": {"train": len(train_chats), "test": sum(is_chat[i] for i in test_idx)},
        "test": {"train": len(train_idx) - len(train_chats), "test": sum(not is_chat[i] for i in test_idx)},
    }
    assert json.loads(json.dumps(report)) == report


def test_tokenize_pairs_counts_truncated_turns_and_never_fims_a_conversation(
    tmp_path: Path, chat_model_dir: Path, chat_tokenizer
) -> None:
    from datasets import load_from_disk

    rows = [r for pair in zip(make_pairs(8), conversation_rows(8), strict=True) for r in pair]
    split, seed = SplitConfig(test_fraction=0.3), 0
    train_idx, test_idx, _ = split_rows(rows, split, seed)
    template = resolve_template("chat", chat_tokenizer)
    multi = [i for i in train_idx if len(rows[i].get("messages", [])) == 7]
    assert multi  # the case under test
    exchanges = render_conversation(rows[multi[0]]["messages"], template, chat_tokenizer)
    (p0, a0, e0), (p1, a1, _), _ = exchange_lengths(chat_tokenizer, exchanges)
    cfg = TokenizeConfig(template="chat", max_length=p0 + a0 + e0 + p1 + a1 + 1, fim_rate=1.0)
    pairs = write_pairs(tmp_path / "in", rows) / "pairs.jsonl"
    report = tokenize_pairs(pairs, tmp_path / "out", str(chat_model_dir), cfg, split, seed)
    train = load_from_disk(str(tmp_path / "out" / "dataset"))["train"].to_list()
    middle = chat_tokenizer.convert_tokens_to_ids(FIM_MIDDLE)
    chats = [r for r in train if r["id"].startswith("conv-")]
    assert chats and all(middle not in r["input_ids"] for r in chats)
    assert 0 < report["fim"]["rows"] <= len(train) - len(chats)  # FIM was on: plain rows only
    kept = [len(labelled_spans(r)) for r in chats]
    assert sorted(set(kept)) == [1, 2]  # single turns whole; every three-exchange one cut to two
    assert report["conversations"]["assistant_turns_trained"] == sum(kept)
    assert report["conversations"]["turns_dropped_by_truncation"] == len(multi)
    assert report["truncated"] >= len(multi)
