"""How pass@k prompts each kind of model, and how its answer becomes the completion that runs.

A completion model continues the bare stub (RAW) and stops at the next top-level statement. An instruct
model is asked (harness practice: EvalPlus `make_raw_chat_prompt`, bigcode's `instruct-humaneval`): the
stub goes into a chat user turn under an instruction ("chat"), or into the template the model was trained
with ("template:<name>"), and the answer's first Python code block is the code.

Whatever the style, `to_completion` returns text that, appended to the problem's prompt, gives the program
(both benchmarks run prompt + completion). A HumanEval stub (or a scraped function's prompt) ending in its
docstring is valid Python, so an answer that restates the whole function follows it as "\\n" + the function
and redefines it, keeping the prompt's imports and helpers; an answer that holds only the body continues
the stub as it is.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from tasks.common.benchmarks import STOP_SEQUENCES
from tasks.common.code_blocks import first_python_block, parse
from tasks.common.templates import CHAT, PromptTemplate, resolve_template

# EvalPlus / bigcode wording; the stub is fenced in a chat turn, the way a user pastes code
CHAT_INSTRUCTION = "Complete the following Python function:"
# A fine-tuned model saw an instruction with the code as the template's input, unfenced, and answered
# with bare code (tasks/synthesize/docstring_pairs.py: the signature is the input, the function the output)
TEMPLATE_INSTRUCTION = "Complete the following Python function."

# Top-level statements of a restated answer that define something; the rest (example calls, prints,
# asserts of the model's own, an `if __name__` block) is dropped, as EvalPlus's sanitizer does: a wrong
# assert of the model's own would fail a correct function, an `input()` would hang it.
DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
ASSIGNMENTS = (ast.Assign, ast.AnnAssign)


@dataclass(frozen=True)
class PromptStyle:
    name: str  # "chat" | "template:<template name>" | "raw": recorded with every score
    template: PromptTemplate | None = None  # what formats the prompt; None: the bare stub
    stop: tuple[str, ...] = STOP_SEQUENCES

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]


RAW = PromptStyle("raw")  # a completion model: the bare stub, cut at the next top-level statement


def chat_style(tokenizer) -> PromptStyle:
    """The tokenizer's chat template (BOS written in when the tokenizer adds one), stopping at its end of
    turn: what an instruct model was tuned to answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template, so pass@k "
            "cannot prompt it as a chat model: use template_style(<its training template>) for a "
            "fine-tuned model or RAW for a completion model (base_style picks RAW by itself)"
        )
    template = resolve_template(CHAT, tokenizer)
    return PromptStyle(CHAT, template, template.stop)


def template_style(template: PromptTemplate) -> PromptStyle:
    """The template a model was fine-tuned with (PromptTemplate.load(model folder)), stopping at its
    headers."""
    return PromptStyle(f"template:{template.name}", template, template.stop)


def base_style(tokenizer) -> PromptStyle:
    """A model before fine-tuning: chat when its tokenizer has a chat template, else a completion model."""
    return chat_style(tokenizer) if getattr(tokenizer, "chat_template", None) else RAW


def build_prompt(problem: dict, style: PromptStyle) -> str:
    stub = problem["prompt"]
    if style.kind == "raw":
        return stub
    if style.template is None:
        raise ValueError(f"prompt style {style.name!r} has no template to format the prompt with")
    if style.kind == "chat":
        return style.template.format(CHAT_INSTRUCTION, f"```python\n{stub.strip()}\n```")
    return style.template.format(TEMPLATE_INSTRUCTION, stub)


def to_completion(problem: dict, text: str, style: PromptStyle) -> str:
    """What follows problem["prompt"] in the program: raw text as generated; for an asked model, the
    answer's first Python block (the whole text when it has no fence), as a redefinition when it defines
    the entry point, else as the body."""
    if style.kind == "raw":
        return text
    code = first_python_block(text)
    restated = restated_function(code, problem["entry_point"])
    return code if restated is None else "\n" + restated


def restated_function(code: str, entry_point: str) -> str | None:
    """The code dedented to module level, keeping its definitions, when it defines `entry_point` (at any
    indentation); None when it does not (a body). Code that does not parse (cut at the token limit) is
    judged by its text and kept whole: it fails as it would have."""
    dedented = textwrap.dedent(code)
    tree = parse(dedented)
    if tree is None:
        pattern = rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\("
        return dedented if re.search(pattern, code, re.MULTILINE) else None
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    if not any(isinstance(node, functions) and node.name == entry_point for node in ast.walk(tree)):
        return None
    lines = dedented.split("\n")
    kept = []
    for node in tree.body:
        if isinstance(node, DEFINITIONS + ASSIGNMENTS):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    return "\n".join(kept) + "\n"
