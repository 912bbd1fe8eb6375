"""Prompt templates: Alpaca with and without an input (seeds/001), the codegen recipe's
Instruction/Task/Input/Response (seeds/000).
"""

from __future__ import annotations

# Stanford Alpaca's two prompts (with and without an input), as in Code Alpaca (seeds/001).
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
# The codegen-350M-mono recipe's Instruction/Task/Input/Response layout (seeds/000).
CODEGEN_TASK = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a programming "
    "code that can solve the following Task:\n\n"
    "### Task:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def format_prompt(template: str, instruction: str, input_text: str = "") -> str:
    if template == "alpaca":
        chosen = ALPACA_WITH_INPUT if input_text.strip() else ALPACA_NO_INPUT
    elif template == "codegen_task":
        chosen = CODEGEN_TASK
    else:
        raise ValueError(f"unknown tokenize.template {template!r}")
    return chosen.format(instruction=instruction.strip(), input=input_text.strip())
