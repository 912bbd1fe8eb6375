"""Batched generation (tasks/common/generation.py) on the tiny model: prompts over the position budget lose
their oldest tokens, and each row ends at its own stop sequence with its new tokens counted."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pipeline_config.schema import EvaluateConfig
from tests.tasks.lm_references import greedy


def test_generate_truncates_long_prompts_from_the_left(tiny_lm) -> None:
    """A prompt over the position budget loses its oldest tokens: the end ("### Response:") must stay,
    since that is where the model continues from."""
    from tasks.common.generation import generate

    model, tokenizer = tiny_lm
    long_prompt = "Write a Python function `square`. " * 30 + "\n\n### Response:\n"
    short_prompt = "def add(a, b):"
    prompt_ids = tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    cfg = EvaluateConfig(max_new_tokens=5, batch_size=2)
    budget = 40
    assert len(prompt_ids) > budget
    seen: list[torch.Tensor] = []

    class Spy:  # records the token ids that reach model.generate; a context of budget + 5 positions
        device = model.device
        config = SimpleNamespace(max_position_embeddings=budget + cfg.max_new_tokens)

        def generate(self, **kwargs):
            seen.append(kwargs["input_ids"])
            return model.generate(**kwargs)

    got = generate(Spy(), tokenizer, [long_prompt, short_prompt], cfg.max_new_tokens, cfg.batch_size)
    assert prompt_ids[-budget:] in seen[0].tolist()  # the long prompt's row: its last `budget` tokens
    assert tokenizer.decode(prompt_ids[-budget:]).endswith("### Response:\n")
    assert [g.text.strip() for g in got] == [
        greedy(model, tokenizer, prompt_ids[-budget:], 5),
        greedy(model, tokenizer, short_prompt, 5),
    ]


def test_generate_ends_each_row_at_a_stop_sequence_and_counts_tokens(tiny_lm) -> None:
    """The tiny random model repeats itself: "import os" -> "sss...", "return" -> "turnturn...",
    "class Counter:" -> "::::..."."""
    from tasks.common.generation import generate

    model, tokenizer = tiny_lm
    free, stopped, straddling = generate(
        model, tokenizer, ["import os", "return", "class Counter:"], 12, stop=["turn", "::"]
    )
    assert (free.text, free.new_tokens, free.hit_cap) == ("s" * 12, 12, True)  # ran on to the cap
    assert (stopped.text, stopped.new_tokens, stopped.hit_cap) == ("", 1, False)  # its row ended at once
    # "::" begins with the prompt's last ":": generation stops after one token and keeps nothing of it
    assert (straddling.text, straddling.new_tokens, straddling.hit_cap) == ("", 1, False)
    assert generate(model, tokenizer, ["return"], 3)[0].text == "turn" * 3  # without stop sequences
