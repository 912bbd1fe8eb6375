"""A conversation (`messages`: OpenAI-style system / user / assistant turns) rendered into text, one
`Exchange` per assistant turn: the untrained text before the answer, the answer, the end-of-turn text
after it. Tokenize trains on every answer from these (tasks/tokenization/conversation.py);
`generation_form` is the prompt that evaluation and `finetune generate` complete, rendered the same way.

With `tokenize.template: chat` the tokenizer's own chat template renders the conversation incrementally:
the text before assistant turn i is the render of the turns before it with the generation prompt, less
what the previous exchanges already hold; the end of turn is what the template writes after an answer.
Each render must extend the previous one (a template that rewrites history, such as one dropping the
reasoning of earlier turns, is refused with a ValueError). With a PromptTemplate (alpaca, codegen_task,
question_answer) each exchange is the template's prompt for the user turn, then the answer; a system
turn goes in front of the first user turn's text, and "\\n" separates an answer from the next exchange,
so that what follows an answer starts as the template's stop strings do when a model runs on.

Either way a single-turn conversation without a system turn renders to `template.format(instruction)`
then the answer: exactly the prompt of the same (instruction, output) pair. User and system text is
stripped, as `PromptTemplate.format` strips an instruction; an answer is kept as the row has it, as a
pair's output is (even where a chat template would trim it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from tasks.common.templates import CHAT, PromptTemplate, adds_bos

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
SEPARATOR = "\n"  # between an answer and the next exchange of a PromptTemplate conversation
_SENTINEL = "\x00answer\x00"


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


@dataclass(frozen=True)
class Exchange:
    prompt: str  # not trained: the text between the previous exchange and this answer
    answer: str  # the assistant turn's content
    end: str  # the template's end-of-turn text after the answer ("" for a PromptTemplate)

    def segments(self) -> tuple[Segment, ...]:
        return Segment(self.prompt, False), Segment(self.answer, True), Segment(self.end, True)


def conversation_problem(messages: object) -> str | None:
    """What is wrong with `messages` as a conversation to train on, or None: a list of {role, content}
    turns with non-empty string content; at most one system turn, first; then user and assistant in turn,
    starting with a user; the last turn an assistant's."""
    if not isinstance(messages, list):
        return f"is a {type(messages).__name__}, not a list of turns"
    for number, turn in enumerate(messages, 1):
        if not isinstance(turn, Mapping):
            return f"turn {number} is a {type(turn).__name__}, not an object with role and content"
        if turn.get("role") not in (SYSTEM, USER, ASSISTANT):
            return f"turn {number} has role {turn.get('role')!r}, not one of system, user, assistant"
        content = turn.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"turn {number} ({turn['role']}) has no content (a non-empty string)"
    body = messages[1:] if messages and messages[0]["role"] == SYSTEM else messages
    for i, turn in enumerate(body):
        expected = USER if i % 2 == 0 else ASSISTANT
        if turn["role"] != expected:
            number = i + 1 + len(messages) - len(body)
            return f"turn {number} is {_a(turn['role'])} turn where {_a(expected)} turn belongs"
    if not body or body[-1]["role"] != ASSISTANT:
        return "does not end with an assistant turn"
    return None


def render_conversation(
    messages: list[dict], template: PromptTemplate, tokenizer, row_id: str = "?"
) -> list[Exchange]:
    """One Exchange per assistant turn of `messages`, rendered with `template` as resolve_template
    resolved it (`chat`: the tokenizer's chat template; else the PromptTemplate). The BOS token starts
    the first prompt where resolve_template would write it. Raises ValueError naming the row for a
    malformed conversation or a chat template that does not render it prefix-consistently."""
    if problem := conversation_problem(messages):
        raise ValueError(f"row {row_id!r}: 'messages' {problem}")
    turns = [_stripped(m) for m in messages]
    bos = tokenizer.bos_token if adds_bos(tokenizer) else None
    if template.name == CHAT:
        exchanges = _chat_exchanges(turns, tokenizer, row_id)
    else:
        exchanges = _template_exchanges(turns, template, bos)
    if bos and not exchanges[0].prompt.startswith(bos):
        exchanges[0] = replace(exchanges[0], prompt=bos + exchanges[0].prompt)
    return exchanges


def conversation_segments(exchanges: list[Exchange]) -> list[Segment]:
    """The exchanges as one run of text segments, each marked trained or not (empty ones left out)."""
    return [s for e in exchanges for s in e.segments() if s.text]


def generation_text(exchanges: list[Exchange]) -> tuple[str, str]:
    """(prompt, answer): every exchange before the last in full, then the last one's prompt; its answer."""
    *history, last = exchanges
    return "".join(e.prompt + e.answer + e.end for e in history) + last.prompt, last.answer


def generation_form(
    messages: list[dict], template: PromptTemplate, tokenizer, row_id: str = "?"
) -> tuple[str, str]:
    """(prompt, answer) of a conversation as evaluation and `finetune generate` use it: the prompt is
    everything before the last assistant turn, ending with the generation prompt, and the answer that
    turn's content. A conversation ending with a user turn (one to answer) gives its prompt and ""."""
    pending = bool(messages) and isinstance(messages[-1], Mapping) and messages[-1].get("role") == USER
    if pending:  # a placeholder answer: only the prompt before it is rendered from it
        messages = [*messages, {"role": ASSISTANT, "content": "?"}]
    prompt, answer = generation_text(render_conversation(messages, template, tokenizer, row_id))
    return prompt, "" if pending else answer


def _a(role: str) -> str:
    return f"an {role}" if role == ASSISTANT else f"a {role}"


def _stripped(turn: Mapping) -> dict:
    content = turn["content"] if turn["role"] == ASSISTANT else turn["content"].strip()
    return {"role": turn["role"], "content": content}


def _template_exchanges(turns: list[dict], template: PromptTemplate, bos: str | None) -> list[Exchange]:
    system = turns[0]["content"] if turns[0]["role"] == SYSTEM else ""
    body = turns[1:] if system else turns
    exchanges = []
    for k in range(0, len(body), 2):
        user, answer = body[k]["content"], body[k + 1]["content"]
        prompt = template.format(f"{system}\n\n{user}" if system and not k else user)
        if k:  # one BOS, at the start of the sequence
            prompt = SEPARATOR + (prompt[len(bos) :] if bos and prompt.startswith(bos) else prompt)
        exchanges.append(Exchange(prompt, answer, ""))
    return exchanges


def _chat_exchanges(turns: list[dict], tokenizer, row_id: str) -> list[Exchange]:
    from jinja2 import TemplateError

    def render(upto: list[dict], generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(
                upto, tokenize=False, add_generation_prompt=generation_prompt
            )
        except TemplateError as error:  # e.g. a template that refuses a system turn
            raise ValueError(
                f"tokenize.template 'chat': the chat template of the tokenizer {tokenizer.name_or_path!r} "
                f"cannot render row {row_id!r}: {error}"
            ) from error

    def inconsistent(number: int, what: str) -> ValueError:
        return ValueError(
            f"tokenize.template 'chat': the chat template of the tokenizer {tokenizer.name_or_path!r} does "
            f"not render row {row_id!r} prefix-consistently ({what} at turn {number}), so its turns cannot "
            "be trained one by one; choose a tokenize.template without it (alpaca, codegen_task, "
            "question_answer) or a tokenizer whose chat template only appends"
        )

    exchanges, rendered = [], ""  # rendered: the template's text through the previous answer
    for i, turn in enumerate(turns):
        if turn["role"] != ASSISTANT:
            continue
        before = render(turns[:i], generation_prompt=True)
        if not before.startswith(rendered):
            raise inconsistent(
                i + 1, "the turns before it rendered differently than with the previous answer"
            )
        # the end of turn, from a sentinel answer: found even where the template trims the content
        marked = render([*turns[:i], {"role": ASSISTANT, "content": _SENTINEL}])
        if not marked.startswith(before + _SENTINEL):
            raise inconsistent(i + 1, "the answer does not follow the generation prompt")
        end = marked[len(before) + len(_SENTINEL) :]
        with_answer = render(turns[: i + 1])
        if not (with_answer.startswith(before) and with_answer.endswith(end)):
            raise inconsistent(i + 1, "the answer is not followed by the template's end of turn")
        exchanges.append(Exchange(before[len(rendered) :], turn["content"], end))
        rendered = with_answer
    return exchanges
