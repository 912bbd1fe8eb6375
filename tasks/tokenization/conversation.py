"""Conversation rows (`messages`) into token ids with loss on every assistant turn.

The exchanges of tasks/common/chat.py are tokenized segment by segment (add_special_tokens=False): the
text before an answer is masked (when `tokenize.mask_prompt`), an answer and its end-of-turn text are
labels, and the last answer kept ends with the eos token instead of the end-of-turn text, as encode_pair
ends a response. So a single-turn conversation encodes to exactly the ids and labels of its pair.

Over `tokenize.max_length` no kept answer is cut: the longest run of whole exchanges from the start that
fits is kept; when not even the first fits, it is encoded as a pair (encode_pair: `overlong` and
`truncation_side` apply as for pairs); with `overlong: drop` a conversation that does not fit whole goes.
A held-out row is encoded as any evaluation row: its generation form (the prompt before the last answer,
and that answer) through encode_pair, so evaluation generates from the rendering the model trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline_config.schema import TokenizeConfig
from tasks.common.chat import Exchange, generation_text, render_conversation
from tasks.common.templates import PromptTemplate
from tasks.tokenization.pair import IGNORE, encode_pair


def encode_exchanges(
    tokenizer, exchanges: list[Exchange], cfg: TokenizeConfig
) -> tuple[dict | None, bool, int]:
    """(row or None when dropped, truncated, assistant turns kept) of one conversation's exchanges."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    parts = [(ids(e.prompt), ids(e.answer), ids(e.end)) for e in exchanges]
    kept, length = 0, 0
    for prompt, answer, end in parts:
        if length + len(prompt) + len(answer) + 1 > cfg.max_length:  # + 1: the eos that would end it
            break
        kept += 1
        length += len(prompt) + len(answer) + len(end)
    truncated = kept < len(parts)
    if truncated and cfg.overlong == "drop":
        return None, True, 0
    if not kept:
        row, _ = encode_pair(tokenizer, exchanges[0].prompt, exchanges[0].answer, cfg)
        return row, True, int(row is not None)
    input_ids, labels = [], []
    for k, (prompt, answer, end) in enumerate(parts[:kept]):
        trained = answer + ([tokenizer.eos_token_id] if k == kept - 1 else end)
        input_ids += prompt + trained
        labels += ([IGNORE] * len(prompt) if cfg.mask_prompt else prompt) + trained
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}, truncated, kept


@dataclass
class ConversationCounts:
    rows: int = 0  # conversation rows encoded (train and test)
    multi_turn: int = 0  # of those, with more than one assistant turn
    assistant_turns_trained: int = 0  # training rows' assistant turns with labels
    turns_dropped_by_truncation: int = 0  # assistant turns left out of kept training rows by max_length


@dataclass
class ConversationEncoder:
    """Encodes the rows that carry `messages` for tokenize_pairs and counts them for its report."""

    tokenizer: object
    template: PromptTemplate
    counts: ConversationCounts = field(default_factory=ConversationCounts)

    def encode(self, pair: dict, cfg: TokenizeConfig, train: bool) -> tuple[dict | None, bool]:
        exchanges = render_conversation(pair["messages"], self.template, self.tokenizer, pair["id"])
        prompt, answer = generation_text(exchanges)
        if train:
            row, truncated, kept = encode_exchanges(self.tokenizer, exchanges, cfg)
        else:
            (row, truncated), kept = encode_pair(self.tokenizer, prompt, answer, cfg), 0
        if row is None:
            return None, truncated
        self.counts.rows += 1
        self.counts.multi_turn += len(exchanges) > 1
        self.counts.assistant_turns_trained += kept
        self.counts.turns_dropped_by_truncation += (len(exchanges) - kept) if train else 0
        text = {"prompt": prompt, "response": answer, "input": pair.get("input", ""), "id": pair["id"]}
        return {**row, **text}, truncated

    def report(self) -> dict:
        return asdict(self.counts)
