"""pass@k on HumanEval: the estimator, completion truncation, and every canonical solution passing in our
sandbox while a wrong one fails."""

from __future__ import annotations

import pytest

from tasks.common.benchmarks import STOP_SEQUENCES, benchmark_key, humaneval_problems, program
from tasks.common.generation import cut_at_stop
from tasks.common.sandbox import run_many
from tasks.evaluation.passk import SANDBOX, pass_at_k


def test_unbiased_estimator():
    # one problem, 5 samples, 1 correct: pass@1 = 1/5; pass@5 = 1; a problem with none correct: 0
    assert pass_at_k([[True, False, False, False, False]], [1, 5]) == {
        "pass_at_1": pytest.approx(0.2),
        "pass_at_5": 1.0,
    }
    assert pass_at_k([[False] * 5, [True] * 5], [1]) == {"pass_at_1": 0.5}
    assert pass_at_k([[True, False]], [1, 5]) == {"pass_at_1": 0.5}  # k above n samples is not estimated


def test_truncation_stops_at_the_next_top_level_statement():
    text = "    return x + 1\n\n\ndef other():\n    pass\n"
    assert cut_at_stop(text, STOP_SEQUENCES) == ("    return x + 1\n\n", True)
    assert cut_at_stop("    return 1\nprint(f(2))", STOP_SEQUENCES) == ("    return 1", True)
    assert cut_at_stop("    return 1", STOP_SEQUENCES) == ("    return 1", False)


def test_subset_is_seeded_and_in_task_order():
    a, b = humaneval_problems(8, seed=0), humaneval_problems(8, seed=0)
    assert [p["task_id"] for p in a] == [p["task_id"] for p in b] and len(a) == 8
    assert [p["task_id"] for p in a] != [p["task_id"] for p in humaneval_problems(8, seed=1)]
    ids = [int(p["task_id"].split("/")[1]) for p in a]
    assert ids == sorted(ids) and len(humaneval_problems()) == 164
    assert benchmark_key(a) == benchmark_key(b) != benchmark_key(humaneval_problems(8, seed=1))


@pytest.mark.parametrize("content", [b"not gzip at all", b""])
def test_a_damaged_benchmark_file_is_named(tmp_path, content):
    bad = tmp_path / "HumanEval.jsonl.gz"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"the HumanEval data file {bad} is unreadable"):
        humaneval_problems(path=str(bad))


@pytest.mark.slow
def test_all_canonical_solutions_pass_and_wrong_ones_fail():
    problems = humaneval_problems()
    canonical = run_many([program(p, p["canonical_solution"]) for p in problems], SANDBOX, workers=2)
    failing = [p["task_id"] for p, r in zip(problems, canonical, strict=True) if not r.passed]
    assert failing == []
    wrong = run_many([program(p, "    return None\n") for p in problems[:8]], SANDBOX, workers=2)
    assert not any(r.passed for r in wrong)


def test_run_passk_scores_what_the_model_wrote(monkeypatch):
    """A 'model' that writes the canonical solution for 2 of 4 problems scores pass@1 = 0.5, and each
    problem's status is recorded; generation is greedy and stops at the next top-level statement."""
    from pipeline_config.schema import PassAtKConfig
    from tasks.common.generation import Completion
    from tasks.evaluation import passk

    problems = humaneval_problems(4, seed=0)
    answers = {p["prompt"]: p["canonical_solution"] for p in problems[:2]}

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, stop, stop_when):
        assert temperature == 0.0 and stop == STOP_SEQUENCES  # one sample per problem: greedy
        return [Completion(answers.get(p, "    return None\n"), 5, False) for p in prompts]

    monkeypatch.setattr(passk, "generate", fake_generate)
    bench = passk.Benchmark("humaneval", problems, program, PassAtKConfig(enabled=True), "key")
    scores, rows = passk.run_passk(None, None, bench, batch_size=8)
    assert scores == {"pass_at_1": 0.5}
    assert [r["statuses"] for r in rows] == [["passed"], ["passed"], ["failed"], ["failed"]]
