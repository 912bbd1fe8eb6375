"""pass@k prompting per kind of model (tasks/evaluation/prompting.py): which style a tokenizer gets, the
prompt each style builds, and answers turned into completions that pass (or fail) in the real sandbox."""

from __future__ import annotations

import pytest

from tasks.common import sandbox
from tasks.common.benchmarks import STOP_SEQUENCES, humaneval_problems, program
from tasks.common.generation import cut_at_stop
from tasks.common.sandbox import run_many
from tasks.common.templates import ALPACA
from tasks.evaluation.passk import SANDBOX
from tasks.evaluation.prompting import (
    CHAT_INSTRUCTION,
    RAW,
    TEMPLATE_INSTRUCTION,
    base_style,
    build_prompt,
    chat_style,
    template_style,
    to_completion,
)

needs_sandbox = pytest.mark.skipif(not sandbox.can_isolate(), reason="no sandbox backend isolates here")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")


@pytest.fixture(scope="module")
def problem() -> dict:
    """HumanEval/0: an import (List) above the stub, which a restated function must still see."""
    (first,) = [p for p in humaneval_problems() if p["task_id"] == "HumanEval/0"]
    assert first["prompt"].startswith("from typing import List")
    return first


def signature(problem: dict) -> str:
    return next(line for line in problem["prompt"].split("\n") if line.startswith("def "))


def test_a_chat_tokenizer_gets_the_stub_in_a_user_turn(tokenizer, problem):
    tokenizer.chat_template = CHATML
    style = base_style(tokenizer)
    assert style == chat_style(tokenizer) and style.name == "chat"
    assert style.stop == ("<|im_end|>",)  # the end of the assistant's turn, not the code stops
    user = f"{CHAT_INSTRUCTION}\n\n```python\n{problem['prompt'].strip()}\n```"
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    assert build_prompt(problem, style) == expected
    assert expected.endswith("<|im_start|>assistant\n") and problem["prompt"].strip() in expected


def test_a_tokenizer_without_a_chat_template_gets_the_bare_stub(tokenizer, problem):
    tokenizer.chat_template = None
    assert base_style(tokenizer) == RAW and RAW.name == "raw" and RAW.stop == STOP_SEQUENCES
    assert build_prompt(problem, RAW) == problem["prompt"]
    with pytest.raises(ValueError, match="has no chat template.*template_style.*RAW"):
        chat_style(tokenizer)


def test_the_template_style_formats_with_the_model_s_training_template(problem):
    style = template_style(ALPACA)
    assert style.name == "template:alpaca" and style.stop == ALPACA.stop
    prompt = build_prompt(problem, style)
    assert prompt == ALPACA.format(TEMPLATE_INSTRUCTION, problem["prompt"])
    assert "### Input:\nfrom typing import List" in prompt and prompt.endswith("### Response:\n")


def test_a_restated_function_survives_the_stops_of_chat_and_template_prompts(tokenizer, problem):
    """The raw stop `\\ndef` matches across a prompt ending in a newline and empties an answer starting
    with `def`; the chat and template styles stop only at their own end of turn or headers."""
    tokenizer.chat_template = CHATML
    answer = f"{signature(problem)}\n{problem['canonical_solution']}"
    for style in (chat_style(tokenizer), template_style(ALPACA)):
        assert cut_at_stop(answer, style.stop, build_prompt(problem, style)) == (answer, False)
    assert cut_at_stop(answer, RAW.stop, build_prompt(problem, RAW)) == ("", True)


@needs_sandbox
def test_answers_become_completions_that_run(tokenizer, problem):
    tokenizer.chat_template = CHATML
    chat, alpaca = chat_style(tokenizer), template_style(ALPACA)
    body = problem["canonical_solution"]
    function = f"{signature(problem)}\n{body}"  # no import: the prompt's `from typing import List` serves
    indented = "\n".join("    " + line if line else line for line in function.split("\n"))
    answers = {
        "prose + restated block": (chat, f"Here is the function:\n\n```python\n{function}```\n\nIt loops."),
        "restated + own wrong checks": (
            chat,
            f"```python\n{function}\n\nprint(has_close_elements([1.0], 0.5))\n"
            "assert has_close_elements([1.0, 2.0], 0.5)\n"
            "if __name__ == '__main__':\n    input()\n```",
        ),
        "indented block in a list": (chat, f"1. The code:\n\n    ```python\n{indented}\n    ```\n"),
        "body only, fenced": (chat, f"```python\n{body}```"),
        "bare restated (template)": (alpaca, function),
        "bare body (template)": (alpaca, body),
        "raw body": (RAW, body),
        "prose only": (chat, "You can compare every pair of numbers and check their distance."),
        "wrong restated": (chat, f"```python\n{signature(problem)}\n    return None\n```"),
    }
    completions = {name: to_completion(problem, text, style) for name, (style, text) in answers.items()}
    assert completions["prose + restated block"] == f"\n{function}"
    assert "assert" not in completions["restated + own wrong checks"]
    assert completions["body only, fenced"] == body and completions["raw body"] == body
    results = run_many([program(problem, c) for c in completions.values()], SANDBOX, workers=2)
    passed = {name: r.passed for name, r in zip(answers, results, strict=True)}
    assert passed == {name: name not in ("prose only", "wrong restated") for name in answers}


def test_raw_keeps_the_text_as_generated(problem):
    text = "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```"
    assert to_completion(problem, text, RAW) == text


@needs_sandbox
def test_run_passk_records_style_generations_and_per_problem_scores(tokenizer, monkeypatch):
    """Two samples per problem: the rows carry the prompt style, what the model wrote, what ran, and the
    problem's own pass@1 and pass@2, while the returned dict keeps the means."""
    from pipeline_config.schema import PassAtKConfig
    from tasks.common.generation import Completion
    from tasks.evaluation import passk

    tokenizer.chat_template = CHATML
    style = chat_style(tokenizer)
    problems = humaneval_problems(2, seed=0)
    by_prompt = {build_prompt(p, style): p for p in problems}
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, stop, stop_when):
        assert stop == style.stop and temperature > 0 and set(prompts) == set(by_prompt)
        out = []
        for prompt in prompts:
            calls.append(prompt)
            p = by_prompt[prompt]
            good = p is problems[0] and calls.count(prompt) == 1  # problem 0: 1 of 2; problem 1: 0 of 2
            answer = f"```python\n{p['canonical_solution'] if good else '    return None'}\n```"
            out.append(Completion(answer, 5, False))
        return out

    monkeypatch.setattr(passk, "generate", fake_generate)
    spec = PassAtKConfig(enabled=True, samples=2, k=[1, 2])
    bench = passk.Benchmark("humaneval", problems, program, spec, "key")
    scores, rows = passk.run_passk(None, tokenizer, bench, 8, style)
    assert scores == {"pass_at_1": 0.25, "pass_at_2": 0.5}
    assert [r["scores"] for r in rows] == [
        {"pass_at_1": 0.5, "pass_at_2": 1.0},
        {"pass_at_1": 0.0, "pass_at_2": 0.0},
    ]
    assert [r["statuses"] for r in rows] == [["passed", "failed"], ["failed", "failed"]]
    assert all(r["prompt_style"] == "chat" for r in rows)
    assert rows[0]["generations"][0].startswith("```python\n")
    assert rows[0]["completions"][0] == problems[0]["canonical_solution"] + "\n"
