"""Python coding tasks composed the way real instruction data is, for the planted clean set
(benchmarks/planted_clean.py): a task is an operation (filter, count, first, sum, ...) over a container
(a list, the words of a string, a dictionary's values) with a predicate ("greater than 30", "written
entirely in capital letters") and sometimes a transform ("squared", "in lower case"). Its instruction is
built from shared phrasings (openers, closing sentences), its code from shared idioms (the empty guard,
the result list, the docstring that repeats the instruction), with conventional names (`values`,
`result`, `word`). So distinct tasks share phrases and 13-grams as real data does; `Task.key` is what
makes two tasks different, and `render` writes one task in one of many phrasings and code styles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPENERS = (
    "Write a Python function `{fn}` that",
    "Write a function `{fn}({p})` that",
    "Implement `{fn}`, a function that",
    "Create a Python function named `{fn}` which",
    "Define a function `{fn}` that takes `{p}` and",
)
CLOSERS = (
    "If `{p}` is empty, return {empty}.",
    "Do not modify `{p}`.",
    "Keep the original order of the elements.",
    "Use a single pass over `{p}` and no third-party libraries.",
    "Include a docstring and type hints.",
    "The function should work for any iterable, not only for lists.",
)
FRAMINGS = (  # what the data is, for some instructions: the same code can serve several tasks
    "`{p}` holds the readings of a sensor taken once a minute.",
    "A shop stores its stock in `{p}`.",
    "`{p}` comes from a form that users fill in.",
    "The survey results are in `{p}`.",
    "`{p}` was parsed from a log file.",
    "A teacher keeps the marks of a class in `{p}`.",
    "`{p}` lists the daily measurements of a weather station.",
    "The game stores each player's moves in `{p}`.",
)
AFFIXES = ("pre", "un", "re", "ing", "ed", "ly", "tion", "er", "est", "ab", "ex", "sub", "ful", "less")
AFFIXES += ("ness", "ment", "dis", "mis", "non", "over", "out", "up", "able", "ous", "ive", "al", "ic")

NUMBER_PREDICATES = {  # name: (description, expression in `x`, number of constants)
    "gt": ("greater than {a}", "{x} > {a}", 1),
    "lt": ("less than {a}", "{x} < {a}", 1),
    "ge": ("at least {a}", "{x} >= {a}", 1),
    "div": ("divisible by {a}", "{x} % {a} == 0", 1),
    "even": ("that are even", "{x} % 2 == 0", 0),
    "odd": ("that are odd", "{x} % 2 == 1", 0),
    "between": ("between {a} and {b} inclusive", "{a} <= {x} <= {b}", 2),
    "abs": ("whose absolute value exceeds {a}", "abs({x}) > {a}", 1),
    "ne": ("not equal to {a}", "{x} != {a}", 1),
    "square": ("whose square is at most {a}", "{x} * {x} <= {a}", 1),
    "digit": ("whose last digit is {a}", "abs({x}) % 10 == {a}", 1),
    "positive": ("that are positive", "{x} > 0", 0),
}
WORD_PREDICATES = {
    "upper": ("written entirely in capital letters", "{x}.isupper()", 0),
    "starts": ("that start with `{s}`", "{x}.startswith({s!r})", 1),
    "ends": ("that end with `{s}`", "{x}.endswith({s!r})", 1),
    "longer": ("longer than {a} characters", "len({x}) > {a}", 1),
    "exactly": ("of exactly {a} characters", "len({x}) == {a}", 1),
    "contains": ("containing `{s}`", "{s!r} in {x}", 1),
    "digits": ("made only of digits", "{x}.isdigit()", 0),
    "palindrome": ("that read the same backwards", "{x} == {x}[::-1]", 0),
    "vowels": ("with more than {a} vowels", "sum(c in 'aeiou' for c in {x}.lower()) > {a}", 1),
    "title": ("that begin with a capital letter", "{x}[:1].isupper()", 0),
}
TRANSFORMS = {  # element kind: {name: (description, expression in `x`)}
    "number": {"": ("", "{x}"), "square": (", squared", "{x} * {x}"), "double": (", doubled", "2 * {x}")},
    "word": {
        "": ("", "{x}"),
        "lower": (", in lower case", "{x}.lower()"),
        "reverse": (", each reversed", "{x}[::-1]"),
        "strip": (", without surrounding punctuation", "{x}.strip('.,;:!?')"),
    },
}
CONTAINERS = {  # name: (element kind, description of the elements, iteration over `p`, parameter names)
    "numbers": ("number", "the numbers in `{p}`", "{p}", ("values", "numbers", "nums", "scores", "data")),
    "dict": ("number", "the values of the dictionary `{p}`", "{p}.values()", ("counts", "table", "prices")),
    "words": ("word", "the words of `{p}`", "{p}.split()", ("text", "line", "sentence", "message")),
    "strings": ("word", "the strings in `{p}`", "{p}", ("words", "names", "tokens", "labels", "items")),
}
# name: (instruction sentence, value when empty, loop body style, element kinds it applies to)
OPERATIONS = {
    "filter": ("returns a list of {els} {pred}{tr}.", "an empty list", "append", ("number", "word")),
    "count": ("returns how many of {els} are {pred}.", "0", "count", ("number", "word")),
    "first": ("returns the first of {els} {pred}{tr}, or `None` if there is none.", "`None`", "first", ()),
    "index": (
        "returns the position of the first of {els} {pred}, or -1 if there is none.",
        "-1",
        "index",
        (),
    ),
    "any": ("returns whether any of {els} are {pred}.", "`False`", "any", ()),
    "remove": ("returns {els} that are not {pred}{tr}.", "an empty list", "remove", ()),
    "sum": ("returns the sum of {els} {pred}{tr}.", "0", "sum", ("number",)),
    "max": ("returns the largest of {els} {pred}{tr}, or `None` if there is none.", "`None`", "max", ()),
    "split": (
        "splits {els} into two lists: those {pred}{tr} and the others.",
        "two empty lists",
        "split",
        (),
    ),
}
ELEMENT_NAMES = {"number": ("x", "value", "n", "item", "num"), "word": ("word", "w", "token", "s", "item")}


@dataclass(frozen=True)
class Task:
    """What a task computes; two tasks with the same key are the same task, however phrased."""

    operation: str
    container: str
    predicate: str
    constants: tuple
    transform: str

    @property
    def key(self) -> tuple:
        return (self.operation, self.container, self.predicate, self.constants, self.transform)


def random_task(rng: random.Random) -> Task:
    operation = rng.choice(list(OPERATIONS))
    kinds = OPERATIONS[operation][3] or ("number", "word")
    container = rng.choice([c for c, spec in CONTAINERS.items() if spec[0] in kinds])
    kind = CONTAINERS[container][0]
    predicates = NUMBER_PREDICATES if kind == "number" else WORD_PREDICATES
    predicate = rng.choice(list(predicates))
    _, expression, arity = predicates[predicate]
    if kind == "word" and arity:
        constants = (rng.choice(AFFIXES),) if "{s" in expression else (rng.randint(2, 12),)
    elif predicate == "between":
        low = rng.randint(-500, 2000)
        constants = (low, low + rng.randint(2, 500))
    elif predicate == "digit":
        constants = (rng.randint(0, 9),)
    else:
        constants = tuple(rng.randint(2, 2000) for _ in range(arity))
    transforms = (
        list(TRANSFORMS[kind]) if operation in ("filter", "first", "remove", "sum", "max", "split") else [""]
    )
    return Task(operation, container, predicate, constants, rng.choice(transforms))


@dataclass(frozen=True)
class Names:
    function: str
    parameter: str
    element: str


def random_names(rng: random.Random, task: Task) -> Names:
    kind, _, _, parameters = CONTAINERS[task.container]
    words = [task.operation, task.predicate] + ([task.transform] if task.transform else [])
    words.append(rng.choice(("items", "values", "all", "list", "of", "in", "from", "")))
    function = "_".join(w for w in words if w)
    return Names(function, rng.choice(parameters), rng.choice(ELEMENT_NAMES[kind]))


def _predicate(task: Task) -> tuple[str, str]:
    kind = CONTAINERS[task.container][0]
    description, expression, _ = (NUMBER_PREDICATES if kind == "number" else WORD_PREDICATES)[task.predicate]
    values = dict(zip(("s",) if "{s" in expression else ("a", "b"), task.constants, strict=False))
    return (
        description,
        expression.replace("{s!r}", "{s_repr}").format(x="{x}", s_repr=repr(values.get("s")), **values),
        values,
    )


def render(
    rng: random.Random, task: Task, names: Names, style: int | None = None, framing: bool = False
) -> tuple[str, str, str]:
    """(instruction, input, code) of `task` under `names`, in a random phrasing and code `style`; with
    `framing`, the instruction first says what the data is (so does one in five without)."""
    sentence, empty, body, _ = OPERATIONS[task.operation]
    kind, elements, iteration, _ = CONTAINERS[task.container]
    description, expression, values = _predicate(task)
    p, x = names.parameter, names.element
    description = description.format(**values)
    transform_text, transform = TRANSFORMS[kind][task.transform]
    els = elements.format(p=p)
    pred = description.removeprefix("that are ") if task.operation in ("count", "any") else description
    pred = pred if task.operation not in ("remove",) else pred.removeprefix("that ")
    text = sentence.format(els=els, pred=pred, tr=transform_text)
    opener = rng.choice(OPENERS).format(fn=names.function, p=p)
    closers = rng.sample(CLOSERS, rng.randint(0, 2))
    frame = [rng.choice(FRAMINGS).format(p=p)] if framing or rng.random() < 0.2 else []
    instruction = " ".join([*frame, f"{opener} {text}", *(c.format(p=p, empty=empty) for c in closers)])
    example = ""
    if rng.random() < 0.2:
        sample = [rng.randint(-20, 300) for _ in range(rng.randint(3, 6))]
        if kind == "word":
            sample = rng.sample(("Alpha", "BETA", "gamma", "level", "preset", "12", "undo", "Echo"), 4)
        example = (
            f"For example: `{p}` = {sample!r}"
            if task.container != "words"
            else f"`{p}` = {' '.join(map(str, sample))!r}"
        )
    condition = expression.format(x=x)
    mapped = transform.format(x=x)
    code = _code(
        rng, task.operation, names.function, p, x, iteration.format(p=p), condition, mapped, text, style
    )
    return instruction, example, code


def _code(rng, operation, fn, p, x, over, condition, mapped, doc, style) -> str:
    style = rng.randrange(3) if style is None else style
    lines = [f"def {fn}({p}):"]
    if style != 2:  # the docstring that repeats the instruction: the commonest idiom of generated code
        lines.append(f'    """{doc[0].upper()}{doc[1:]}"""')
    if style == 1 and operation not in ("split",):
        empty = {"count": "0", "any": "False", "index": "-1", "sum": "0", "first": "None", "max": "None"}
        lines += [f"    if not {p}:", f"        return {empty.get(operation, '[]')}"]
    loop = [f"    for {x} in {over}:", f"        if {condition}:"]
    if operation == "filter":
        body = ["    result = []", *loop, f"            result.append({mapped})", "    return result"]
        if style == 2:
            body = [f"    return [{mapped} for {x} in {over} if {condition}]"]
    elif operation == "remove":
        body = ["    result = []", f"    for {x} in {over}:", f"        if not ({condition}):"]
        body += [f"            result.append({mapped})", "    return result"]
        if style == 2:
            body = [f"    return [{mapped} for {x} in {over} if not ({condition})]"]
    elif operation == "count":
        body = ["    count = 0", *loop, "            count += 1", "    return count"]
        if style == 2:
            body = [f"    return sum(1 for {x} in {over} if {condition})"]
    elif operation == "first":
        body = [*loop, f"            return {mapped}", "    return None"]
    elif operation == "index":
        body = [f"    for i, {x} in enumerate({over}):", f"        if {condition}:", "            return i"]
        body.append("    return -1")
    elif operation == "any":
        body = [*loop, "            return True", "    return False"]
        if style == 2:
            body = [f"    return any({condition} for {x} in {over})"]
    elif operation == "sum":
        body = ["    total = 0", *loop, f"            total += {mapped}", "    return total"]
        if style == 2:
            body = [f"    return sum({mapped} for {x} in {over} if {condition})"]
    elif operation == "max":
        body = ["    best = None", *loop, f"            if best is None or {mapped} > best:"]
        body += [f"                best = {mapped}", "    return best"]
    else:  # split
        body = ["    matching, others = [], []", f"    for {x} in {over}:", f"        if {condition}:"]
        body += [
            f"            matching.append({mapped})",
            "        else:",
            f"            others.append({mapped})",
        ]
        body.append("    return matching, others")
    return "\n".join(lines + body) + "\n"
