"""The scikit-learn doctest benchmark: which records become problems, the program that checks a completion
against the function's own examples in the sandbox, and `verify` keeping only problems that discriminate."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from tasks.common import sandbox
from tasks.common.benchmarks import seeded_subset as select
from tasks.common.sandbox import run_many
from tasks.evaluation.doctests import SANDBOX, benchmark_key, candidates, program, verify

needs_sandbox = pytest.mark.skipif(not sandbox.can_isolate(), reason="no sandbox backend isolates here")

DOCUMENTED = '''@cache
def double(x):
    """Twice x.

    >>> double(2)
    4
    """
    return 2 * x'''


def record(name: str, code: str, kind: str = "function") -> dict:
    """A scrape record as tasks/scrape writes one: the docstring cleaned, as ast.get_docstring does."""
    docstring = inspect.cleandoc(code.split('"""')[1])
    return {
        "id": name,
        "name": name,
        "kind": kind,
        "docstring": docstring,
        "code": code,
        "package_version": "1",
    }


def sklearn_record(function, id: str, edit=lambda examples: examples) -> dict:
    """The record of a real scikit-learn function; `edit` rewrites its examples (from the first `>>>` to the
    docstring's end) in the docstring and in the code alike."""
    code = textwrap.dedent(inspect.getsource(function))  # unwraps the decorator, keeps its source
    docstring = inspect.cleandoc(function.__doc__)
    examples = docstring[docstring.index(">>>") :]
    code = code.replace(textwrap.indent(examples, "    "), textwrap.indent(edit(examples), "    "))
    return {
        "id": id,
        "name": f"{function.__module__}.{function.__name__}",
        "kind": "function",
        "docstring": docstring.replace(examples, edit(examples)),
        "code": code,
        "package_version": "1.9.1",
    }


def test_candidates_are_held_out_functions_with_expected_output():
    no_output = record(
        "pkg.mod.quiet", 'def quiet():\n    """Nothing shown.\n\n    >>> quiet()\n    """\n    pass'
    )
    records = [
        record("pkg.mod.double", DOCUMENTED),
        record("pkg.mod.Thing.double", DOCUMENTED, kind="method"),
        no_output,
        record("pkg.other.double", DOCUMENTED),
    ]
    problems = candidates(records, held_out=lambda r: r["name"] != "pkg.other.double")
    assert [p["task_id"] for p in problems] == ["sklearn-doctest/pkg.mod.double"]
    (problem,) = problems
    assert (problem["module"], problem["entry_point"]) == ("pkg.mod", "double")
    assert problem["prompt"] == DOCUMENTED[: DOCUMENTED.index("    return")]
    assert problem["prompt"].startswith("@cache\ndef double(x):") and problem["prompt"].endswith('    """\n')
    assert problem["canonical"] == DOCUMENTED and problem["docstring"].endswith(">>> double(2)\n4")


def test_subset_is_seeded_and_in_task_order():
    problems = [{"task_id": f"t/{i:02d}"} for i in range(20)]
    a = select(problems, 5, seed=0)
    assert a == select(problems, 5, seed=0) and len(a) == 5 and a == sorted(a, key=lambda p: p["task_id"])
    assert a != select(problems, 5, seed=1)
    assert select(problems, None, seed=0) == select(problems, 50, seed=0) == problems


def test_benchmark_key_follows_the_prompts():
    (problem,) = candidates([record("pkg.mod.double", DOCUMENTED)], held_out=lambda r: True)
    changed = {**problem, "prompt": problem["prompt"].replace("Twice", "Two times")}
    assert benchmark_key([problem]) == benchmark_key([dict(problem)])
    assert benchmark_key([problem]) != benchmark_key([changed])


@needs_sandbox
def test_program_passes_the_real_body_and_fails_wrong_ones():
    """gen_batches's examples import it from sklearn.utils: the wrong body fails only if the candidate
    replaced the original there too, not just in the module that defines it."""
    from sklearn.utils import gen_batches

    (problem,) = candidates([sklearn_record(gen_batches, "good")], held_out=lambda r: True)
    assert problem["prompt"].startswith("@validate_params(")
    body = problem["canonical"][len(problem["prompt"]) :]
    codes = [program(problem, c) for c in (body, "    return iter([])\n", "    return (\n")]
    canonical, wrong, broken = run_many(codes, SANDBOX, workers=2)
    assert canonical.passed, canonical.stdout + canonical.stderr
    assert not wrong.passed and "Failed example" in wrong.stdout
    assert broken.status == "failed" and "SyntaxError" in broken.stderr


@needs_sandbox
def test_a_restated_function_replaces_the_original_too():
    """A chat answer that restates the whole function (prose around a fenced block): to_completion puts
    it after the prompt as a redefinition, which must be what the examples call (the docstring-only stub
    returns None and fails them)."""
    from sklearn.utils import gen_batches

    from tasks.evaluation.prompting import PromptStyle, to_completion

    (problem,) = candidates([sklearn_record(gen_batches, "good")], held_out=lambda r: True)
    answer = f"Here it is:\n\n```python\n{problem['canonical']}```\n\nIt yields slices."
    completion = to_completion(problem, answer, PromptStyle("chat"))
    assert completion == "\n" + problem["canonical"]
    (result,) = run_many([program(problem, completion)], SANDBOX, workers=1)
    assert result.passed, result.stdout + result.stderr


@needs_sandbox
def test_verify_keeps_only_problems_that_discriminate():
    from sklearn.utils import gen_batches, gen_even_slices

    records = [
        sklearn_record(gen_batches, "good"),
        sklearn_record(
            gen_even_slices, "wrong output", lambda ex: ex.replace("(7, 10, None)]", "(7, 11, None)]")
        ),
        sklearn_record(gen_batches, "never calls it", lambda ex: ">>> 1 + 1\n2"),  # any body passes
    ]
    assert "(7, 11, None)]" in records[1]["code"] and ">>> 1 + 1\n    2\n" in records[2]["code"]
    problems = candidates(records, held_out=lambda r: True)
    assert len(problems) == 3
    kept, counts = verify(problems)
    assert [p["record_id"] for p in kept] == ["good"]
    assert counts == {"candidates": 3, "kept": 1, "canonical_failed": 1, "not_discriminating": 1}


@pytest.mark.parametrize(
    ("want", "got", "ok"),
    [
        ("0.57\n", "0.5714285714285714\n", True),  # rounded to the digits shown
        ("0.57\n", "0.5765\n", False),  # rounds to 0.58
        ("array([0.44, 0.16])\n", "array([0.4412, 0.1588])\n", True),
        ("array([0.44, 0.16])\n", "array([0.4412, 0.1588, 0.1])\n", False),  # another shape
        ("np.float64(0.5)\n", "0.5\n", True),  # numpy 2 scalar repr
        ("1.5e-05\n", "1.54e-05\n", True),
        ("1.5e-05\n", "1.56e-05\n", False),
        ("precision 0.50\n", "recall 0.50\n", False),  # the words must match
        ("[0 1 1]\n", "[0 1 2]\n", False),
    ],
)
def test_rounded_output_checker(want, got, ok):
    import decimal
    import doctest
    import re

    from tasks.evaluation.doctests import CHECKER

    namespace = {"re": re, "decimal": decimal, "doctest": doctest}
    exec(CHECKER, namespace)
    assert namespace["RoundedOutputChecker"]().check_output(want, got, doctest.NORMALIZE_WHITESPACE) is ok


@needs_sandbox
def test_the_evaluate_stage_builds_the_benchmark_from_held_out_records(tmp_path, monkeypatch):
    """tasks.evaluation.benchmarks: the scrape's held-out records -> verified problems -> pass@k through
    the same loop as HumanEval (a 'model' that writes the real body passes)."""
    import json

    from sklearn.utils import gen_batches

    from pipeline_config import load_config
    from pipeline_config.schema import PassAtKConfig
    from tasks.common.generation import Completion
    from tasks.common.stage import StageOutput
    from tasks.evaluation import benchmarks, passk

    good = sklearn_record(gen_batches, "good") | {"path": "sklearn/utils/_chunking.py"}
    other = sklearn_record(gen_batches, "elsewhere") | {"path": "sklearn/other.py"}
    (tmp_path / "records.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(other) + "\n")
    scrape = StageOutput(
        stage="scrape",
        key="k",
        path=str(tmp_path),
        rows_in=2,
        rows_out=2,
        status="cached",
        seconds=0.0,
        outputs={"records": "records.jsonl"},
    )
    tiny = load_config("pipeline_config/tiny.yaml")
    evaluate = tiny.evaluate.model_copy(
        update={"humaneval": PassAtKConfig(), "sklearn_doctests": PassAtKConfig(enabled=True)}
    )
    cfg = tiny.model_copy(update={"evaluate": evaluate})
    held = {"sklearn/utils/_chunking.py"}  # the split decides per source: one of the two is held out
    monkeypatch.setattr("tasks.evaluation.is_held_out", lambda group, split, seed: group in held)
    (bench,) = benchmarks(cfg, {"scrape": scrape})
    assert bench.name == "sklearn_doctests" and [p["record_id"] for p in bench.problems] == ["good"]
    assert bench.key == benchmark_key(bench.problems) and bench.limits == SANDBOX
    body = bench.problems[0]["canonical"][len(bench.problems[0]["prompt"]) :]
    monkeypatch.setattr(passk, "generate", lambda *a, **k: [Completion(body, 10, False)])
    scores, rows = passk.run_passk(None, None, bench, batch_size=1)
    assert scores == {"pass_at_1": 1.0} and rows[0]["statuses"] == ["passed"]


def test_select_verified_checks_only_as_many_as_it_needs(monkeypatch):
    from tasks.evaluation import doctests

    problems = [{"task_id": f"t/{i:02d}", "good": i % 3 != 0} for i in range(12)]  # 8 good, 4 bad
    checked: list[str] = []

    def fake_verify(chunk, workers=2):
        checked.extend(p["task_id"] for p in chunk)
        good = [p for p in chunk if p["good"]]
        bad = len(chunk) - len(good)
        return good, {
            "candidates": len(chunk),
            "kept": len(good),
            "canonical_failed": bad,
            "not_discriminating": 0,
        }

    monkeypatch.setattr(doctests, "verify", fake_verify)
    kept, counts = doctests.select_verified(problems, 3, seed=0)
    assert (
        len(kept) == 3 and all(p["good"] for p in kept) and kept == sorted(kept, key=lambda p: p["task_id"])
    )
    assert len(checked) < len(problems) and counts["unchecked"] == len(problems) - len(checked)
    assert counts["candidates"] == len(checked) and counts["kept"] == 3
    assert doctests.select_verified(problems, 3, seed=0)[0] == kept  # seeded
    checked.clear()
    everything, counts = doctests.select_verified(problems, None, seed=0)
    assert len(everything) == 8 and len(checked) == 12 and counts["unchecked"] == 0
