"""What `finetune generate` prints: with several instructions each answer under its instruction, an empty
generation as "(empty)", and nothing of MLflow's or the loaders' (their lines and bars go to the
workspace's log file unless --verbose)."""

from __future__ import annotations

import contextlib
import logging
import sys

import pytest

from flows.cli import main
from tasks.common.generation import Completion
from tasks.common.templates import ALPACA


def registered(monkeypatch, answers: dict[str, str], loading=lambda: None):
    """A registered model answering each instruction from `answers`; `loading` runs as it loads."""
    from flows import tracking
    from tasks.registration import registry, serving

    model = serving.RegisteredModel("models:/m/1", None, None, ALPACA, {"max_new_tokens": 7})

    def complete(self, prompts, max_new_tokens=None):
        by_prompt = {ALPACA.format(instruction): text for instruction, text in answers.items()}
        return [Completion(by_prompt[p], 3, False) for p in prompts]

    monkeypatch.setattr(serving.RegisteredModel, "complete", complete)
    monkeypatch.setattr(serving, "load_registered", lambda uri: loading() or model)
    monkeypatch.setattr(tracking, "client", lambda: None)
    monkeypatch.setattr(registry, "reachable_registry", lambda uri: contextlib.nullcontext())


def test_each_answer_is_printed_under_its_instruction(tiny_profile, capsys, monkeypatch):
    answers = {"Sum a list.": "def total(xs):\n    return sum(xs)\n", "Reverse a string.": "  \n"}
    registered(monkeypatch, answers)
    assert main(["generate", "--config", str(tiny_profile()), *answers]) == 0
    assert capsys.readouterr().out == (
        "> Sum a list.\ndef total(xs):\n    return sum(xs)\n\n> Reverse a string.\n(empty)\n"
    )


def test_one_instruction_prints_its_answer_alone_and_an_empty_one_says_so(tiny_profile, capsys, monkeypatch):
    registered(monkeypatch, {"Sum a list.": "sum(xs)", "Say nothing.": ""})
    assert main(["generate", "--config", str(tiny_profile()), "Sum a list."]) == 0
    assert capsys.readouterr().out == "sum(xs)\n"
    assert main(["generate", "--config", str(tiny_profile()), "Say nothing."]) == 0
    assert capsys.readouterr().out == "(empty)\n"


def chatty_loading():
    """What loading a registered model writes: MLflow's INFO lines (its handler writes to the stderr of the
    moment) and a loader's progress bar."""
    import mlflow  # noqa: F401 - configures the "mlflow" logger and its stream
    from tqdm import tqdm

    logging.getLogger("mlflow.transformers").info("Loading the model's components")
    for _ in tqdm(range(3), desc="Loading weights", file=sys.stderr):
        pass


@pytest.mark.parametrize("verbose", [False, True])
def test_library_output_while_loading_goes_to_the_log_unless_verbose(
    tiny_profile, tmp_path, capsys, monkeypatch, verbose
):
    registered(monkeypatch, {"Sum a list.": "sum(xs)"}, loading=chatty_loading)
    argv = ["generate", "--config", str(tiny_profile()), "Sum a list.", *(["--verbose"] if verbose else [])]
    assert main(argv) == 0
    seen = capsys.readouterr()
    assert seen.out == "sum(xs)\n"
    logs = list((tmp_path / "ws" / "logs").glob("*.log"))
    logged = "".join(p.read_text() for p in logs)
    for line in ("Loading the model's components", "Loading weights"):
        assert (line in seen.err) == verbose and (line in logged) != verbose
