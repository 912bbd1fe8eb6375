"""Execution verification of synthetic tasks: the solution and the teacher's own tests (asserts) run together
in the sandbox (tasks/common/sandbox.py: no network, a read-only host, CPU, memory, process and wall limits,
a private /tmp, a scrubbed environment; the backend `sandbox.backend` names), many at a time.

A task passes when the script exits 0. A failure gets one kind: `no_tests` (no assert, or asserts that
never name anything the solution defines: `assert True` checks nothing), `syntax_error` (either part does
not parse, checked before anything runs), `timeout` (the wall-clock limit, or SIGXCPU at the CPU limit),
`assertion` (an AssertionError: the solution and its tests disagree) and `crash` (any other exception, or
a signal). With `verify.keep: passing` (the default) only passing tasks are kept; with `all` every task is
kept and says `metadata.verified` true or false, and `metadata.verification` its kind.

Where the samples run follows the config's `executor` (tasks/common/parallel.py): here, `verify.workers` at
a time; on a Dask cluster, chunks of samples go to the workers, each running `verify.workers` at a time in
its own sandbox, so every Dask worker needs what the sandbox needs (util-linux's unshare, and root or
unprivileged user namespaces) or `sandbox.backend: none`; a worker that cannot isolate fails the stage with
the sandbox's message, which names what to change.
"""

from __future__ import annotations

import ast
import re
import signal
from collections import Counter
from dataclasses import dataclass

from pipeline_config.schema import ExecutorConfig, VerifyConfig
from tasks.common.code_blocks import parse
from tasks.common.filtering import Filter
from tasks.common.parallel import Executor, current_stage_executor
from tasks.common.sandbox import Limits, Result, requested_backend, resolve, run_many

FAILURE_KINDS = ("no_tests", "syntax_error", "timeout", "assertion", "crash")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


@dataclass(frozen=True)
class Verdict:
    kind: str  # "passed" or one of FAILURE_KINDS
    detail: str = ""  # the exception line, or why the task was not run

    @property
    def passed(self) -> bool:
        return self.kind == "passed"


def program(solution: str, tests: str) -> str:
    return f"{solution.rstrip()}\n\n\n{tests.rstrip()}\n"


def defined_names(tree: ast.Module) -> set[str]:
    """Top-level names a script defines itself: functions, classes, assigned names (not imports)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif not isinstance(node, ast.Import | ast.ImportFrom):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    return names


def precheck(solution: str, tests: str) -> Verdict | None:
    """A verdict reached without running anything, or None: the task must run."""
    if not tests.strip():
        return Verdict("no_tests", "the teacher wrote no tests")
    solution_tree, tests_tree = parse(solution), parse(tests)
    if solution_tree is None or tests_tree is None:
        return Verdict("syntax_error", f"the {'solution' if solution_tree is None else 'tests'} do not parse")
    asserts = [n for n in ast.walk(tests_tree) if isinstance(n, ast.Assert)]
    if not asserts:
        return Verdict("no_tests", "the tests hold no assert")
    own = {n.name for n in tests_tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    used = {n.id for n in ast.walk(tests_tree) if isinstance(n, ast.Name)} - own
    if not used & (defined_names(solution_tree) - defined_names(tests_tree)):
        return Verdict("no_tests", "the tests never use what the solution defines")
    return None


def classify(result: Result) -> Verdict:
    """The kind of a sandbox run, from its status and the last line of its traceback."""
    if result.passed:
        return Verdict("passed")
    if result.status == "timeout" or result.returncode == 128 + signal.SIGXCPU:
        return Verdict("timeout", f"{result.status} (exit {result.returncode})")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else f"{result.status} (exit {result.returncode})"
    match = _EXCEPTION_LINE.match(last)
    name = match[1].rsplit(".", 1)[-1] if match and result.status == "failed" else ""
    if name == "AssertionError":
        return Verdict("assertion", last[:300])
    if name in _SYNTAX_ERRORS:
        return Verdict("syntax_error", last[:300])
    return Verdict("crash", last[:300])


@dataclass(frozen=True)
class SandboxRun:
    """How each chunk of samples runs (tasks/common/parallel.py's context)."""

    limits: Limits
    workers: int
    backend: str  # as the config asks (auto, root, userns, none): each Dask worker resolves it for itself

    def prepare(self) -> None:
        """Nothing to build: run_many checks isolation in the process that runs the samples."""


def run_chunk(codes: list[str], run: SandboxRun) -> list[Result]:
    return run_many(codes, run.limits, run.workers, run.backend)


def verify(
    tasks: list[tuple[str, str]], cfg: VerifyConfig, executor: ExecutorConfig | None = None
) -> list[Verdict]:
    """One verdict per (solution, tests), in order; the tasks that must run go to the sandbox together."""
    verdicts: list[Verdict | None] = [precheck(solution, tests) for solution, tests in tasks]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    executor = executor or current_stage_executor()
    on_cluster = executor is not None and executor.backend == "dask"  # there, each worker checks itself
    requested = requested_backend()  # the stage's sandbox.backend, carried to Dask workers by value
    if todo and not on_cluster:
        resolve(requested)  # here, before anything runs: SandboxUnavailable names the machine's limit
    limits = Limits(wall_s=cfg.timeout_s, cpu_s=cfg.cpu_s, memory_mb=cfg.memory_mb)
    codes = [program(*tasks[i]) for i in todo]
    run = SandboxRun(limits, cfg.workers, requested)
    with Executor(executor) as runner:  # local: one chunk, here, as many at a time as verify.workers
        parts = runner.map_chunks(run_chunk, codes, run, chunk=max(1, len(codes)))
        results = [result for part in parts for result in part]
    for i, result in zip(todo, results, strict=True):
        verdicts[i] = classify(result)
    return [v for v in verdicts if v is not None]


def verification_filter(
    cfg: VerifyConfig, rows: list[dict], executor: ExecutorConfig | None = None
) -> Filter:
    """Runs `rows` (metadata.tests) in the sandbox at once, then judges each row by its verdict: drops the
    failures (keep: passing) or marks every row (keep: all)."""
    verdicts = verify([(r["output"], r["metadata"].get("tests", "")) for r in rows], cfg, executor)
    by_row = {id(row): verdict for row, verdict in zip(rows, verdicts, strict=True)}

    def check(row: dict) -> tuple[bool, str | None] | tuple[bool, str, dict]:
        verdict = by_row[id(row)]
        row["metadata"]["verified"] = verdict.passed
        row["metadata"]["verification"] = verdict.kind
        if verdict.passed or cfg.keep == "all":
            return True, None
        return False, verdict.kind, {"error": verdict.detail}

    return Filter("verify", FAILURE_KINDS, check)


def summary(verdicts: list[str]) -> dict:
    """Pass rate and failure kinds of a list of verdict kinds, for the stage report."""
    counts = Counter(verdicts)
    checked = len(verdicts)
    return {
        "checked": checked,
        "passed": counts["passed"],
        "pass_rate": round(counts["passed"] / checked, 4) if checked else None,
        "failures": {kind: counts[kind] for kind in FAILURE_KINDS},
    }
