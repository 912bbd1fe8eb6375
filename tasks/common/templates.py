"""Prompt templates: Alpaca with and without an input (seeds/001), the codegen recipe's
Instruction/Task/Input/Response (seeds/000).

A template travels with the model it trained: tokenize writes it as `prompt_template.json`, train copies it
into the model folder, registration logs it with the model version, and evaluation and `finetune generate`
read it from there. So inference formats prompts exactly as training did, whatever the config says later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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

# Stanford Alpaca's two prompts (with and without an input), as in Code Alpaca (seeds/001).
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
# The codegen-350M-mono recipe's Instruction/Task/Input/Response layout (seeds/000): always an Input block.
_CODEGEN = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a programming "
    "code that can solve the following Task:\n\n"
    "### Task:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
CODEGEN_TASK = PromptTemplate("codegen_task", _CODEGEN, _CODEGEN, ALPACA_STOP + ("\n### Task:",))

TEMPLATES = {t.name: t for t in (ALPACA, CODEGEN_TASK)}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown tokenize.template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def format_prompt(template: str, instruction: str, input_text: str = "") -> str:
    return get_template(template).format(instruction, input_text)
