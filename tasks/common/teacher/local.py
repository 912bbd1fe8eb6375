"""Local transformers teacher: batched generation from a save_pretrained folder, reproducible per seed."""

from __future__ import annotations

from pipeline_config.schema import TeacherConfig
from tasks.common.generation import generate
from tasks.common.models import load_causal_lm, load_tokenizer, pick_device

LOCAL_BATCH_SIZE = 8


class LocalTeacher:
    batch_size = LOCAL_BATCH_SIZE

    def __init__(self, model_dir: str, cfg: TeacherConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.tokenizer = load_tokenizer(model_dir, for_generation=True)
        self.model = load_causal_lm(model_dir, pick_device()).eval()
        self._calls = 0

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        # Seed per call (seed + call index): two teachers with one seed replay the same sequence of
        # outputs, yet a repeated call does not return the very same samples again.
        torch.manual_seed(self.seed + self._calls)
        self._calls += 1
        completions = generate(
            self.model,
            self.tokenizer,
            prompts,
            self.cfg.max_new_tokens,
            self.batch_size,
            self.cfg.temperature,
        )
        return [c.text for c in completions]
