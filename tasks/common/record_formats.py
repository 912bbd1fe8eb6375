"""How a dataset's records become the pipeline's rows: one mapping per format, in a registry the schema
reads (`datasets[].format`; `datasets[].columns` renames the fields each format reads).

A row is what synthesize writes (`id, instruction, input, output, source, metadata`); a chat record also
keeps its whole conversation as `messages` (OpenAI form: `role` system / user / assistant, `content`),
with `instruction` its first user turn and `output` its last assistant turn, so that the row filters, the
dedup and the reports read a chat row like any other, and tokenize trains on every assistant turn.

    alpaca             instruction, input (optional), output        (Code Alpaca, python_code_instructions)
    prompt_completion  prompt, completion                           (a question/answer set)
    messages           messages: [{role, content}]                  (OpenAI chat)
    sharegpt           conversations: [{from, value}]               (ShareGPT: human / gpt / system)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tasks.common.chat import ASSISTANT, SYSTEM, USER, conversation_problem


class BadRecord(ValueError):
    """A record this format cannot map; `reason` is its rejection reason (counted per source)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Format:
    name: str
    columns: Mapping[str, str]  # the fields it reads -> their default column names
    optional: tuple[str, ...]  # fields a record may lack
    to_fields: Callable[[Mapping, Mapping[str, str]], dict]  # record, columns -> row fields


FORMATS: dict[str, Format] = {}
REASONS = ("missing_field", "not_text", "bad_conversation", "no_assistant_turn")


def dataset_format(name: str, optional: tuple[str, ...] = (), **columns: str):
    def register(to_fields: Callable[[Mapping, Mapping[str, str]], dict]):
        FORMATS[name] = Format(name, columns, optional, to_fields)
        return to_fields

    return register


def text(record: Mapping, columns: Mapping[str, str], field: str, optional: bool = False) -> str:
    column = columns[field]
    value = record.get(column)
    if value is None:
        if optional:
            return ""
        raise BadRecord("missing_field", f"no {column!r} (the {field} column)")
    if not isinstance(value, str):
        raise BadRecord("not_text", f"{column!r} is a {type(value).__name__}, not a string")
    return value


@dataset_format("alpaca", optional=("input",), instruction="instruction", input="input", output="output")
def _alpaca(record: Mapping, columns: Mapping[str, str]) -> dict:
    return {
        "instruction": text(record, columns, "instruction"),
        "input": text(record, columns, "input", optional=True),
        "output": text(record, columns, "output"),
    }


@dataset_format("prompt_completion", prompt="prompt", completion="completion")
def _prompt_completion(record: Mapping, columns: Mapping[str, str]) -> dict:
    return {
        "instruction": text(record, columns, "prompt"),
        "input": "",
        "output": text(record, columns, "completion"),
    }


@dataset_format("messages", messages="messages", role="role", content="content")
def _messages(record: Mapping, columns: Mapping[str, str]) -> dict:
    return chat_fields(record, columns, "messages", OPENAI_ROLES)


@dataset_format("sharegpt", conversations="conversations", role="from", content="value")
def _sharegpt(record: Mapping, columns: Mapping[str, str]) -> dict:
    return chat_fields(record, columns, "conversations", SHAREGPT_ROLES)


OPENAI_ROLES = {SYSTEM: SYSTEM, USER: USER, ASSISTANT: ASSISTANT}
SHAREGPT_ROLES = {
    SYSTEM: SYSTEM,
    "human": USER,
    USER: USER,
    "gpt": ASSISTANT,
    ASSISTANT: ASSISTANT,
    "chatgpt": ASSISTANT,
    "bard": ASSISTANT,
    "bing": ASSISTANT,
    "model": ASSISTANT,
}


def chat_fields(record: Mapping, columns: Mapping[str, str], field: str, roles: Mapping[str, str]) -> dict:
    """The conversation as `messages`, with the first user turn and the last assistant turn as the row's
    instruction and output. A conversation that ends on a user turn loses that turn (nothing answers it)."""
    column = columns[field]
    turns = record.get(column)
    if turns is None:
        raise BadRecord("missing_field", f"no {column!r} (the {field} column)")
    if not isinstance(turns, list):
        raise BadRecord("bad_conversation", f"{column!r} is a {type(turns).__name__}, not a list of turns")
    messages = [_turn(turn, i, columns, roles) for i, turn in enumerate(turns, 1)]
    while messages and messages[-1]["role"] != ASSISTANT:
        messages.pop()
    check_conversation(messages)
    return {
        "instruction": next(m["content"] for m in messages if m["role"] == USER),
        "input": "",
        "output": messages[-1]["content"],
        "messages": messages,
    }


def _turn(turn: object, number: int, columns: Mapping[str, str], roles: Mapping[str, str]) -> dict:
    role_key, content_key = columns["role"], columns["content"]
    if not isinstance(turn, Mapping):
        raise BadRecord("bad_conversation", f"turn {number} is a {type(turn).__name__}, not an object")
    role, content = turn.get(role_key), turn.get(content_key)
    if role not in roles:
        known = ", ".join(sorted(roles))
        raise BadRecord("bad_conversation", f"turn {number}: {role_key}={role!r} is not one of {known}")
    if not isinstance(content, str) or not content.strip():
        raise BadRecord("bad_conversation", f"turn {number}: {content_key!r} is not a non-empty string")
    return {"role": roles[role], "content": content}


def check_conversation(messages: list) -> None:
    """What tokenize relies on (tasks/common/chat.py `conversation_problem`), as a BadRecord."""
    if not any(m["role"] == ASSISTANT for m in messages):
        raise BadRecord("no_assistant_turn", "the conversation has no assistant turn to learn")
    if problem := conversation_problem(messages):
        raise BadRecord("bad_conversation", f"the conversation {problem}")
