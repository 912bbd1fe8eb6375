"""Prompt templates: Alpaca with and without an input (Code Alpaca), the codegen-350M-mono QLoRA recipe's
Instruction/Task/Input/Response, `### Question / ### Answer` (the pythia-70m Q&A tutorial) and the
tokenizer's own chat template (the phi-3-mini QLoRA recipe; SmolLM2 has one), rendered once into format
strings.

`resolve_template(name, tokenizer)` is what the tokenize stage uses: it also writes the model's BOS token
into the template when the tokenizer would add one, so that every consumer (training, evaluation,
`finetune generate`, MLflow serving), all of which encode prompts without special tokens, sees the
sequence start the model was trained with.

A template travels with the model it trained: tokenize writes it as `prompt_template.json`, train copies it
into the model folder, registration logs it with the model version, and evaluation and `finetune generate`
read it from there. So inference formats prompts exactly as training did, whatever the config says later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

TEMPLATE_FILE = "prompt_template.json"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    with_input: str  # format string with {instruction} and {input}
    without_input: str  # format string with {instruction}
    # where a response ends when a model runs on: the template's own headers, which a response never holds
    stop: tuple[str, ...] = ()

    def format(self, instruction: str, input_text: str = "") -> str:
        chosen = self.with_input if input_text.strip() else self.without_input
        return chosen.format(instruction=instruction.strip(), input=input_text.strip())

    def save(self, folder: Path) -> Path:
        path = Path(folder) / TEMPLATE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> PromptTemplate:
        path = Path(folder) / TEMPLATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the model folder carries no prompt template")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a prompt template: {error}") from error

    @classmethod
    def from_dict(cls, data: dict) -> PromptTemplate:
        return cls(**{**data, "stop": tuple(data.get("stop", ()))})

    def to_dict(self) -> dict:
        return asdict(self)


ALPACA_STOP = ("\n### Instruction:", "\n### Input:", "\n### Response:")

# Stanford Alpaca's two prompts (with and without an input), as in Code Alpaca (Code Alpaca).
ALPACA = PromptTemplate(
    "alpaca",
    with_input=(
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    without_input=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    stop=ALPACA_STOP,
)
# The codegen-350M-mono QLoRA recipe's Instruction/Task/Input/Response layout: always an Input block.
_CODEGEN = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a programming "
    "code that can solve the following Task:\n\n"
    "### Task:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
CODEGEN_TASK = PromptTemplate("codegen_task", _CODEGEN, _CODEGEN, ALPACA_STOP + ("\n### Task:",))

# The pythia-70m Q&A tutorial's layout; an input (a signature, some code) follows the question.
QUESTION_ANSWER = PromptTemplate(
    "question_answer",
    with_input="### Question:\n{instruction}\n\n{input}\n\n### Answer:\n",
    without_input="### Question:\n{instruction}\n\n### Answer:\n",
    stop=("\n### Question:", "\n### Answer:"),
)

TEMPLATES = {t.name: t for t in (ALPACA, CODEGEN_TASK, QUESTION_ANSWER)}
CHAT = "chat"  # rendered from the tokenizer's chat template: needs the tokenizer (resolve_template)
TEMPLATE_NAMES = (*TEMPLATES, CHAT)


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        hint = " ('chat' is rendered from a tokenizer: resolve_template)" if name == CHAT else ""
        raise ValueError(f"unknown tokenize.template {name!r}{hint}; known: {', '.join(TEMPLATE_NAMES)}")
    return TEMPLATES[name]


def resolve_template(name: str, tokenizer) -> PromptTemplate:
    """The template `name` as this tokenizer's model must see it: the chat template rendered, the BOS
    token written in front when the tokenizer adds one and the template does not already start with it."""
    template = chat_template(tokenizer) if name == CHAT else get_template(name)
    bos = tokenizer.bos_token if adds_bos(tokenizer) else None
    if bos and not template.without_input.startswith(bos):
        template = replace(
            template,
            with_input=_escape(bos) + template.with_input,
            without_input=_escape(bos) + template.without_input,
        )
    return template


def adds_bos(tokenizer) -> bool:
    """Whether encoding with special tokens starts with BOS: asked of the tokenizer itself, since a
    reloaded byte-level tokenizer may add BOS through its post-processor while `add_bos_token` is False."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos_id


_INSTRUCTION, _INPUT, _ANSWER = "\x00instruction\x00", "\x00input\x00", "\x00answer\x00"


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def chat_template(tokenizer) -> PromptTemplate:
    """The tokenizer's chat template as a PromptTemplate: one user turn (the instruction, then the input)
    and the generation prompt. Rendered with sentinels, then braces escaped, so any text of the template
    survives str.format. Stops at the end-of-turn text that follows an assistant message."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenize.template 'chat': the tokenizer {tokenizer.name_or_path!r} has no chat template; "
            f"choose one of {', '.join(TEMPLATES)}"
        )

    def render(content: str, answer: str | None = None) -> str:
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None)

    def as_format(text: str) -> str:
        return _escape(text).replace(_INSTRUCTION, "{instruction}").replace(_INPUT, "{input}")

    end_of_turn = render(_INSTRUCTION, _ANSWER).split(_ANSWER, 1)[1].strip()
    return PromptTemplate(
        CHAT,
        with_input=as_format(render(f"{_INSTRUCTION}\n\n{_INPUT}")),
        without_input=as_format(render(_INSTRUCTION)),
        stop=(end_of_turn,) if end_of_turn else (),
    )


def format_prompt(template: str, instruction: str, input_text: str = "") -> str:
    return get_template(template).format(instruction, input_text)
