"""A teacher's reply as a task: instruction, input, solution and tests, however the reply is dressed.

Teachers answer in many costumes: a bare continuation of the prompt ("... Task 4\\nInstruction:" then the
text), a chat reply with a preamble ("Sure! Here is a new task:"), markdown labels (`**Instruction:**`,
`### Solution`, `[Problem Description]` as Magicoder asks), code fenced or not, and often a next task
after the first. The reply is cut into sections at label lines (outside code fences only: `# Input:` in a
solution is code), each label's first section is kept, and a repeated label or a "Task N" heading starts
the next task. A reply cut off by the token limit (a code fence left open, a last task without its
solution) keeps its complete tasks; the cut one is counted as `truncated`. Code comes out of the sections
through tasks.common.code_blocks, the project's one fence parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.common.code_blocks import fenced_blocks, python_code

# canonical section -> the labels a teacher uses for it
LABELS = {
    "instruction": (
        "instruction",
        "instructions",
        "problem description",
        "problem",
        "question",
        "exercise",
        "task",
    ),
    "input": ("input", "inputs", "example input"),
    "solution": ("solution", "output", "code", "answer", "response", "implementation"),
    "tests": ("tests", "test", "test cases", "unit tests", "assertions", "asserts"),
}
_ALIASES = {alias: name for name, aliases in LABELS.items() for alias in aliases}
_LABEL_WORDS = "|".join(sorted(map(re.escape, _ALIASES), key=len, reverse=True))
# "### Instruction:", "**Solution:**", "1. Tests:", "[Problem Description]", "> Input -", "## Tests" ...
_LABEL_LINE = re.compile(
    rf"^[ \t]*(?:#{{1,6}}[ \t]*|>[ \t]*|[-*+][ \t]+|\d+[.)][ \t]*)?[*_]{{0,2}}\[?[ \t]*({_LABEL_WORDS})"
    rf"[ \t]*(\d+)?[ \t]*\]?[ \t]*[*_]{{0,2}}[ \t]*([:：\-–][*_]{{0,2}}|$)[ \t]*(.*)$",
    re.IGNORECASE,
)
# a heading that starts another task: "### Task 5", "Task 5:", "**Task 5**", "###", and OSS-Instruct's
# next "Code snippet for inspiration:"
_TASK_HEADING = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*|[*_]{2})?(?:(?:new[ \t]+)?task[ \t]*\d+\b|code snippet\b)|^[ \t]*#{3,}[ \t]*$",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^[ \t]*```")
_FENCED = re.compile(r"^[ \t]*```.*?(?:^[ \t]*```[^\n]*$|\Z)", re.DOTALL | re.MULTILINE)
# chat openers before the task itself: "Sure!", "Here is a new task:", "Certainly, here's one."
_CHATTY = re.compile(
    r"^(?:(?:sure|certainly|of course|okay|ok|great|absolutely|alright)\b[^\n:.!]*[:.!,]+\s*|"
    r"here(?: is|'s| are)\b[^\n:]*:\s*)",
    re.IGNORECASE,
)
_NONE_INPUTS = {"", "none", "(none)", "n/a", "-", "no input", "<noinput>", "nothing", "null"}


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    solution: str
    tests: str  # assert statements (may be empty: verification says no_tests)


def _boundary(line: str, seen: set[str]) -> tuple[str, str | None]:
    """What a line outside code fences is: ("next", None) a heading of another task or a label seen before
    in this task; ("heading", None) a task heading before any label (skipped); ("label", section); or
    ("text", None)."""
    label = _LABEL_LINE.match(line)
    # "Task 3" is a heading of another task, "Task: ..." the instruction
    if _TASK_HEADING.match(line) and not (label and label[3].startswith((":", "："))):
        return ("next", None) if seen else ("heading", None)
    if label:
        name = _ALIASES[label[1].lower()]
        return ("next", None) if name in seen else ("label", name)
    return "text", None


def split_tasks(text: str) -> tuple[list[str], bool]:
    """The reply cut into one piece per task, at the heading of another task or at a label the current
    task already has (outside code fences), and whether it ends inside an open code fence: the reply was
    cut off by the token limit in the middle of its last piece."""
    pieces: list[list[str]] = [[]]
    seen: set[str] = set()
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            kind, name = _boundary(line, seen)
            if kind == "next":
                pieces.append([])
                seen = set()
                kind, name = _boundary(line, seen)
            if kind == "label":
                seen.add(name)
        pieces[-1].append(line)
    return ["\n".join(piece) for piece in pieces], in_fence


def sections(text: str) -> tuple[str, dict[str, str]]:
    """(preamble, {section: text}) for the first task of a reply: label lines outside code fences
    open sections; a label seen before, or a heading of another task, ends the task."""
    preamble: list[str] = []
    found: dict[str, list[str]] = {}
    current: list[str] = preamble
    in_fence = False
    for line in split_tasks(text)[0][0].splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            kind, name = _boundary(line, set(found))
            if kind == "heading":
                continue
            if kind == "label":
                current = found[name] = []
                label = _LABEL_LINE.match(line)
                if label[4].strip():
                    current.append(label[4])
                continue
        current.append(line)
    return "\n".join(preamble).strip(), {k: "\n".join(v).strip() for k, v in found.items()}


def strip_chatty(text: str) -> str:
    """Drop chat openers ("Sure! Here is a new task:") from the start of a text."""
    previous = None
    while previous != text:
        previous, text = text, _CHATTY.sub("", text, count=1).lstrip()
    return text


def split_asserts(code: str) -> tuple[str, str]:
    """(code, tests): top-level assert lines written into the solution's block are the tests."""
    lines = code.splitlines()
    tests = [line for line in lines if line.startswith("assert ")]
    rest = [line for line in lines if not line.startswith("assert ")]
    return "\n".join(rest).strip(), "\n".join(tests)


def code_of(section: str) -> str:
    """The Python code of a section: its fenced Python blocks joined, or the section itself unfenced."""
    if fenced_blocks(section):
        return "\n\n".join(block.strip("\n") for block in python_code(section)).strip()
    return section.strip()


def parse_task(reply: str, continuation: bool = True) -> Task | None:
    """The first task of a reply, or None without an instruction and a solution (parse_tasks: all).

    `continuation`: the prompt ended with "Instruction:", so text before the first label is the
    instruction itself (a completion model continues the prompt) unless a labelled one follows.
    """
    preamble, found = sections(reply)
    instruction = found.get("instruction") or (strip_chatty(preamble) if continuation else "")
    instruction = strip_chatty(instruction)
    solution = code_of(found.get("solution", ""))
    input_text = found.get("input", "").strip()
    if not solution and (blocks := [b for b in fenced_blocks(input_text) if b.is_python]):
        # the solution written under "Input:" (small teachers do): the code is the solution
        solution, input_text = blocks[0].code.strip(), _FENCED.sub("", input_text, count=1).strip()
    if not instruction or not solution:
        return None
    tests = code_of(found.get("tests", ""))
    if not tests:
        solution, tests = split_asserts(solution)
    if input_text.lower() in _NONE_INPUTS or input_text.strip("`").lower() in _NONE_INPUTS:
        input_text = ""
    return Task(instruction.strip(), input_text, solution, tests)


TRUNCATED, UNPARSEABLE = "truncated", "unparseable"


def parse_tasks(
    reply: str, continuation: bool = True, max_tasks: int | None = None
) -> tuple[list[Task], list[tuple[str, str]]]:
    """Every task of a reply (the first `max_tasks` pieces), and (reason, piece) for each piece that is
    not a task: "truncated" when the reply stops inside it (an open code fence, or a last task after
    others that never got its solution: a completion model continuing its list until the token limit),
    "unparseable" otherwise."""
    pieces, open_fence = split_tasks(reply)
    last = len(pieces) - 1
    tasks: list[Task] = []
    problems: list[tuple[str, str]] = []
    for i, piece in enumerate(pieces[:max_tasks]):
        task = None if i == last and open_fence else parse_task(piece, continuation)
        if task is not None:
            tasks.append(task)
        elif i == last and (open_fence or i > 0):
            problems.append((TRUNCATED, piece))
        else:
            problems.append((UNPARSEABLE, piece))
    return tasks, problems
