"""tasks.common.teacher.local: the transformers teacher on the shared tiny scratch model from builders.py (no
network, no model hub): one completion per prompt, seeded sampling, left padding, the call cache across a
kill, its budget caps between batches, and an instruct teacher asked through its chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
from teacher_fakes import FakeClock, balanced, local_cfg

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import Teacher
from tasks.common.teacher.cache import CallCache
from tasks.common.teacher.local import LocalTeacher

PROMPTS = [
    "def add(a, b):",
    "Write a function that returns the mean of a list.\n",
    "class Counter:\n    def __init__(self):",
    "import json\n",
    "x",
    "def fizzbuzz(n):\n    for i in range(1, n + 1):",
    "def load(path):",
    "# flatten nested lists\n",
    "return a + b",  # nine prompts: more than one batch of 8
]


def test_local_one_completion_per_prompt(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.8), seed=0)
    assert isinstance(teacher, Teacher)
    out = teacher.generate(PROMPTS)
    assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
    assert teacher.generate([]) == []
    for prompt, text in zip(PROMPTS, out, strict=True):
        assert not text.startswith(prompt)
        assert "<|pad|>" not in text and "<|endoftext|>" not in text


def test_local_greedy_is_deterministic(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    first = teacher.generate(PROMPTS)
    assert teacher.generate(PROMPTS) == first
    assert any(first)  # a random model still generates something for some prompt


def test_local_same_seed_same_samples(tiny_model_dir: Path) -> None:
    cfg = local_cfg(tiny_model_dir, 1.0)
    a = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    b = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    c = LocalTeacher(str(tiny_model_dir), cfg, seed=8).generate(PROMPTS)
    assert a == b
    assert a != c  # near-uniform logits over ~400 tokens: a different seed samples different text


def test_local_left_padding_matches_unbatched(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    batched = teacher.generate(PROMPTS[:4])
    alone = [teacher.generate([p])[0] for p in PROMPTS[:4]]
    assert batched == alone


def test_local_rejects_max_new_tokens_beyond_context(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    max_positions = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    cfg = TeacherConfig(backend="local", model=str(tiny_model_dir), max_new_tokens=max_positions)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        LocalTeacher(str(tiny_model_dir), cfg).generate(["def f():"])


class CountingGenerate:
    """Wraps tasks.common.generation.generate as the local teacher calls it: counts prompts generated,
    and can fail on its n-th call (a kill in the middle of a stage)."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        from tasks.common.generation import generate

        self.real, self.fail_on_call = generate, fail_on_call
        self.calls: list[list[str]] = []

    def __call__(self, model, tokenizer, prompts, *args, **kwargs):
        self.calls.append(list(prompts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed mid-stage")
        return self.real(model, tokenizer, prompts, *args, **kwargs)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_local_cache_returns_what_an_uncached_run_produces(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, temperature: float
) -> None:
    cfg = local_cfg(tiny_model_dir, temperature)
    uncached = LocalTeacher(str(tiny_model_dir), cfg, seed=5)
    expected = [uncached.generate(PROMPTS), uncached.generate(PROMPTS[:3])]  # two calls: two seeds each

    # killed during the second batch of the first call: the first batch (8 prompts) is already on disk
    killer = CountingGenerate(fail_on_call=2)
    monkeypatch.setattr("tasks.common.teacher.local.generate", killer)
    with pytest.raises(KeyboardInterrupt):
        LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path)).generate(PROMPTS)
    assert CallCache(tmp_path).count() == 8

    counting = CountingGenerate()
    monkeypatch.setattr("tasks.common.teacher.local.generate", counting)
    resumed = LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path))
    assert [resumed.generate(PROMPTS), resumed.generate(PROMPTS[:3])] == expected
    assert counting.calls == [sorted(PROMPTS, key=len)[8:], sorted(PROMPTS[:3], key=len)]  # the rest
    assert resumed.stats()["cache_hits"] == 8 and resumed.stats()["produced"] == 4

    counting.calls.clear()
    again = LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path))
    assert [again.generate(PROMPTS), again.generate(PROMPTS[:3])] == expected
    assert counting.calls == [] and again.stats()["requests"] == 0 and again.stats()["cache_hits"] == 12


def test_local_cache_key_holds_the_seed_when_sampling(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = local_cfg(tiny_model_dir, 1.0)
    a = LocalTeacher(str(tiny_model_dir), cfg, seed=7, cache=CallCache(tmp_path)).generate(PROMPTS)
    b = LocalTeacher(str(tiny_model_dir), cfg, seed=8, cache=CallCache(tmp_path))
    assert b.generate(PROMPTS) != a and b.stats()["cache_hits"] == 0


def test_local_precision_is_in_the_weights_the_stats_and_the_cache_key(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """teacher.precision: bf16 on a CPU with native bf16 (simulated) generates with bf16 weights; bf16 and
    fp32 greedy answers can differ, so one precision is never served the other's cached answers."""
    import torch

    from tasks.common import models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    auto = local_cfg(tiny_model_dir, 0.0)
    bf16 = LocalTeacher(str(tiny_model_dir), auto, seed=0, cache=CallCache(tmp_path))
    assert bf16.model.dtype == torch.bfloat16 and bf16.stats()["precision"] == "bf16"
    bf16.generate(PROMPTS)
    cfg = local_cfg(tiny_model_dir, 0.0, precision="fp32")
    fp32 = LocalTeacher(str(tiny_model_dir), cfg, seed=0, cache=CallCache(tmp_path))
    assert fp32.model.dtype == torch.float32
    fp32.generate(PROMPTS)
    assert fp32.stats()["cache_hits"] == 0 and fp32.stats()["produced"] == len(PROMPTS)
    again = LocalTeacher(str(tiny_model_dir), auto, seed=0, cache=CallCache(tmp_path))
    again.generate(PROMPTS)
    assert again.stats()["cache_hits"] == len(PROMPTS)  # its own precision's answers are reused


def test_local_max_requests_stops_between_batches(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0, max_requests=8), seed=0)
    out = teacher.generate(PROMPTS)
    longest = max(range(len(PROMPTS)), key=lambda i: len(PROMPTS[i]))  # batches go by length
    assert [i for i, t in enumerate(out) if t is None] == [longest]
    stats = teacher.stats()
    assert stats["stopped"] == "max_requests" and stats["requests"] == 8 and stats["skipped"] == 1
    assert stats["prompt_tokens"] > 0 and 0 < stats["completion_tokens"] <= 8 * 12 and balanced(stats)


def test_local_max_seconds(tiny_model_dir: Path) -> None:
    clock = FakeClock()
    cfg = local_cfg(tiny_model_dir, 0.0, max_seconds=10)
    teacher = LocalTeacher(str(tiny_model_dir), cfg, seed=0, clock=clock)
    assert None not in teacher.generate(PROMPTS[:2])
    clock.advance(11)
    assert teacher.generate(PROMPTS[:2]) == [None, None] and teacher.stats()["stopped"] == "max_seconds"


# SmolLM2-Instruct's ChatML layout (shortened): what the default local teacher's tokenizer carries
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model, its tokenizer given a chat template (an instruct teacher in miniature)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "chat_model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return folder


def test_local_asks_an_instruct_teacher_through_its_chat_template(
    chat_model_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    prompts = PROMPTS[:3]
    counting = CountingGenerate()
    monkeypatch.setattr("tasks.common.teacher.local.generate", counting)
    cache = CallCache(tmp_path / "cache")

    chat = LocalTeacher(str(chat_model_dir), local_cfg(chat_model_dir, 0.0), seed=0, cache=cache)
    assert all(isinstance(text, str) for text in chat.generate(prompts))
    (seen,) = counting.calls
    assert sorted(seen) == sorted(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.strip()}], add_generation_prompt=True, tokenize=False
        )
        for p in prompts
    )
    assert seen[0].startswith("<|im_start|>system\n") and seen[0].endswith("<|im_start|>assistant\n")
    assert chat.stop == ("<|im_end|>",)  # the assistant's turn ends there (this EOS is another token)

    # off by config, or a tokenizer without a template: the raw prompt, and the cache keeps them apart
    raw = LocalTeacher(
        str(chat_model_dir), local_cfg(chat_model_dir, 0.0, chat_template=False), seed=0, cache=cache
    )
    raw.generate(prompts)
    plain = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    plain.generate(prompts)
    assert [sorted(c) for c in counting.calls[1:]] == [sorted(prompts)] * 2
    assert raw.stats()["cache_hits"] == 0 and raw.stop == plain.stop == ()
