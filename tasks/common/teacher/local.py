"""Local transformers teacher: batched generation from a save_pretrained folder, reproducible per seed,
with every finished batch kept in the call cache.

Reproducibility with a cache: a sampled completion depends on the RNG state and, through padding and the
shared random stream, on the other prompts of its batch. So the prompts of a call are cut into fixed
batches (by length, as `generate` would sort them), each batch is seeded on its own from (seed, call index,
batch index), and the cache key holds that seed and the batch's prompts. A batch is then either served
whole from the cache or generated again exactly as an uncached run would generate it: the cached value for
a prompt is always what the uncached run produces (same libraries: their versions are in the key too).
Greedy batches carry no seed in the key, so greedy answers are shared across seeds.

An instruct teacher (the default, SmolLM2-135M-Instruct) is asked as it was trained to be asked: each prompt
becomes one user turn of the tokenizer's chat template, with the assistant's generation prompt after it
(`teacher.chat_template`; a tokenizer without a template gets the raw prompt, as a completion model wants).
The key holds the rendered prompt, so switching the template on or off never serves the other's answers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from pipeline_config.schema import TeacherConfig
from tasks.common.generation import generate, prompt_budget
from tasks.common.models import load_for_inference, load_tokenizer, model_precision
from tasks.common.teacher.accounting import Accounting
from tasks.common.teacher.cache import CallCache, call_key
from tasks.common.templates import PromptTemplate, chat_template

LOCAL_BATCH_SIZE = 8


def batch_seed(seed: int, call: int, batch: int) -> int:
    """A seed per batch: two teachers with one seed replay the same sequence of outputs, a repeated call
    does not return the very same samples again, and no batch's samples depend on another being run."""
    digest = hashlib.sha256(f"{seed}:{call}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class LocalTeacher:
    batch_size = LOCAL_BATCH_SIZE

    def __init__(
        self,
        model_dir: str,
        cfg: TeacherConfig,
        seed: int = 0,
        cache: CallCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.seed, self.cache = cfg, seed, cache
        self.model_dir = model_dir
        self.tokenizer = load_tokenizer(model_dir, for_generation=True)
        self.template: PromptTemplate | None = None  # None: prompts go to the model as they are
        self.stop: tuple[str, ...] = ()
        if cfg.chat_template and getattr(self.tokenizer, "chat_template", None):
            self.template = chat_template(self.tokenizer)
            # the end of the assistant's turn, unless it is the EOS token generation stops at anyway
            self.stop = tuple(s for s in self.template.stop if s != self.tokenizer.eos_token)
        self.model = load_for_inference(model_dir, precision=cfg.precision)
        self.precision = model_precision(self.model)  # resolved: auto is bf16 where it is native
        self.accounting = Accounting(cfg, clock)
        self._calls = 0
        self._identity: str | None = None

    def stats(self) -> dict:
        return {**self.accounting.stats(), "precision": self.precision}

    def close(self) -> None:
        self.model = None  # the weights are the memory a later stage (training) wants back

    def model_input(self, prompt: str) -> str:
        """The text the model continues: the prompt as a user turn of the chat template, or as it is."""
        return prompt if self.template is None else self.template.format(prompt)

    def generate(self, prompts: list[str]) -> list[str | None]:
        if self.model is None:
            raise RuntimeError("LocalTeacher.generate after close()")
        prompts = [self.model_input(p) for p in prompts]
        call = self._calls
        self._calls += 1
        acct = self.accounting
        out: list[str | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        with acct.timed():
            acct.add("prompts", len(prompts))
            for b, start in enumerate(range(0, len(order), self.batch_size)):
                indices = order[start : start + self.batch_size]
                batch = [prompts[i] for i in indices]
                seed = batch_seed(self.seed, call, b)
                keys = [self._key(batch, seed, p) for p in batch] if self.cache is not None else []
                hits = [self.cache.get(k) for k in keys] if keys else [None] * len(batch)
                if all(hit is not None for hit in hits) or not acct.reserve(len(batch)):
                    # whole batch cached, or a cap reached: what the cache holds is still free to return
                    for i, hit in zip(indices, hits, strict=True):
                        out[i] = None if hit is None else hit["text"]
                        acct.add("cache_hits" if hit is not None else "skipped")
                    continue
                for i, text in zip(indices, self._generate(batch, seed, keys), strict=True):
                    out[i] = text
        return out

    def _generate(self, batch: list[str], seed: int, keys: list[str]) -> list[str]:
        import torch

        torch.manual_seed(seed)
        completions = generate(
            self.model,
            self.tokenizer,
            batch,
            self.cfg.max_new_tokens,
            self.batch_size,
            self.cfg.temperature,
            stop=self.stop,
        )
        budget = prompt_budget(self.model, self.cfg.max_new_tokens)
        lengths = [len(ids) for ids in self.tokenizer(batch, add_special_tokens=False)["input_ids"]]
        for key, n, completion in zip(keys or [None] * len(batch), lengths, completions, strict=True):
            prompt_tokens = min(n, budget) if budget else n
            self.accounting.add_tokens(prompt_tokens, completion.new_tokens)
            if key is not None:
                value = {"text": completion.text, "prompt_tokens": prompt_tokens}
                self.cache.put(key, value | {"completion_tokens": completion.new_tokens})
        self.accounting.add("produced", len(batch))
        return [c.text for c in completions]

    def _key(self, batch: list[str], seed: int, prompt: str) -> str:
        sampling = self.cfg.temperature > 0
        return call_key(
            backend="local",
            model=self._model_identity(),
            temperature=self.cfg.temperature,
            max_new_tokens=self.cfg.max_new_tokens,
            precision=self.precision,  # bf16 and fp32 greedy answers can differ
            seed=seed if sampling else None,
            batch=batch,
            prompt=prompt,
        )

    def _model_identity(self) -> str:
        """The model folder's content hash (memoised by size and mtime) and the library versions: a rebuilt
        base model at the same path, or another transformers, must not be served old answers."""
        if self._identity is None:
            import torch
            import transformers

            from tasks.common.io import hash_path

            self._identity = (
                f"{hash_path(self.model_dir)}/torch-{torch.__version__}/tf-{transformers.__version__}"
            )
        return self._identity
